"""`orchestrator train <overrides>` exactly as the command runs it, plus a JobObserver that keeps rank 0's timings.

Writes the workload script's JSON fields to RESULT: `first_step_at` (the worker's time.time() when
its first optimizer step finished, from its AttemptStartReport) and `steady_samples_per_s` (samples
over the loop's own window times of the steps after the first 20%, from its train/samples_per_s).

    python benchmarks/overhead/builtin.py RESULT [overrides...]
"""

from __future__ import annotations

import gc
import json
import sys
import time

GLOBAL_BATCH = 256
WARMUP_STEPS = 60


class TimingRecorder:
    """A JobObserver (orchestrator.lifecycle.controller) that sums the loop's log windows after the warm-up steps."""

    def __init__(self) -> None:
        self.first_step_at = None
        self.samples = 0.0
        self.seconds = 0.0
        self.logged_step = 0

    def group_started(self, specs) -> None:
        pass

    def report(self, world_rank: int, report: object) -> None:
        from orchestrator.lifecycle.rank_reports import AttemptStartReport, MetricsReport

        if isinstance(report, AttemptStartReport) and world_rank == 0:
            self.first_step_at = report.wall_time
        elif isinstance(report, MetricsReport) and "train/samples_per_s" in report.metrics:
            window = (report.step - self.logged_step) * GLOBAL_BATCH  # samples of all ranks since the last log
            if self.logged_step >= WARMUP_STEPS:
                self.samples += window
                self.seconds += window / report.metrics["train/samples_per_s"]
            self.logged_step = report.step

    def job_ended(self, outcome) -> None:
        pass

    def result(self) -> dict:
        return {
            "first_step_at": self.first_step_at,
            "end_at": time.time(),
            "steady_samples_per_s": self.samples / self.seconds if self.seconds else None,
        }


def main() -> int:
    result_path, overrides = sys.argv[1], sys.argv[2:]
    import launchers.jobs.job_runner as job_runner
    from orchestrator.cli.commands import main as orchestrator_main

    recorder = TimingRecorder()
    observers = job_runner.job_observers
    job_runner.job_observers = lambda *args, **kwargs: [*observers(*args, **kwargs), recorder]
    code = orchestrator_main(["train", *overrides])
    with open(result_path, "w") as handle:
        json.dump(recorder.result(), handle)
    gc.freeze()  # as the orchestrator command ends (orchestrator.cli.commands.run)
    return code


if __name__ == "__main__":
    sys.exit(main())
