"""Training throughput with tracking to a local `mlflow server` vs tracking off, and the end-of-run flush.

The same short job runs with `tracking.enabled=false` and with `tracking.uri=<a server this script
starts>`, interleaved (the order alternates every repetition), on one Ray instance started here.
Samples/s is what rank 0 reports (`train/samples_per_s`, the job's own metric, first report left out as
warm-up); the flush is how long the end of the run waited for buffered metrics (JobSummary.flush_s).
The model is not logged in either mode: this measures metric tracking, not model export.

    .venv/bin/python benchmarks/bench_tracking.py                  # 3 repetitions, 300 steps
    .venv/bin/python benchmarks/bench_tracking.py --reps 5 --log-every 1
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launchers.jobs.job_runner import run_job  # noqa: E402
from orchestrator.cli.console import Console  # noqa: E402
from orchestrator.tracking.mlflow_server import MlflowServer, free_port, local_spec  # noqa: E402
from tests.helpers import compose_job  # noqa: E402  (composes conf/ exactly as `orchestrator train` does)


class RecordingConsole(Console):
    """A quiet console that keeps every throughput value rank 0 reports."""

    def __init__(self):
        super().__init__(io.StringIO(), interactive=False)
        self.throughput: list[float] = []
        self.seen_at: list[float] = []

    def on_metrics(self, report) -> None:
        super().on_metrics(report)
        if "train/samples_per_s" in report.metrics:
            self.throughput.append(report.metrics["train/samples_per_s"])
            self.seen_at.append(time.monotonic())


def run_once(overrides: list[str], work_dir: Path) -> dict:
    """One job: median samples/s (warm-up report left out), flush, wall time, and the training span (first to
    last throughput report the driver received) and the end (last report to the job's return)."""
    job = compose_job(overrides, work_dir)
    console = RecordingConsole()
    started = time.monotonic()
    summary = run_job(job, console, overrides)
    wall_s = time.monotonic() - started
    if summary.outcome.status != "FINISHED":
        raise RuntimeError(f"benchmark job {summary.outcome.status}: {summary.outcome.error}")
    return {
        "samples_per_s": statistics.median(console.throughput[1:] or console.throughput),
        "flush_s": summary.flush_s,
        "wall_s": wall_s,
        "train_s": console.seen_at[-1] - console.seen_at[0],
        "end_s": time.monotonic() - console.seen_at[-1],
    }


def main() -> int:
    """Run the interleaved repetitions and print medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--log-every", type=int, default=10)
    args = parser.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    common = [
        "model=mlp",
        "data=synthetic",
        f"trainer.max_steps={args.steps}",
        f"trainer.log_every_n_steps={args.log_every}",
        "tracking.log_model=false",
    ]
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    server = MlflowServer(local_spec(work / "server", port=free_port()), log_path=work / "server.log").start()
    modes = {
        "off": ["tracking.enabled=false"],
        "server": [f"tracking.uri={server.spec.url}", "tracking.experiment=bench"],
    }
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    try:
        run_once(common + modes["off"], work / "warmup")  # first job pays for imports and worker start-up
        for rep in range(args.reps):
            order = list(modes) if rep % 2 == 0 else list(reversed(modes))
            for mode in order:
                result = run_once(common + modes[mode], work / f"{mode}-{rep}")
                results[mode].append(result)
                flush = "-" if result["flush_s"] is None else f"{result['flush_s'] * 1000:.1f} ms"
                print(
                    f"rep {rep + 1} {mode:6s}: {result['samples_per_s']:8,.0f} samples/s, wall "
                    f"{result['wall_s']:.1f} s (training {result['train_s']:.1f} s, end {result['end_s']:.2f} s), "
                    f"flush {flush}",
                    flush=True,
                )
    finally:
        server.stop()
        ray.shutdown()
    report(results, args)
    return 0


def report(results: dict[str, list[dict]], args) -> None:
    """Medians per mode and the ratios against tracking off (the baseline measured in the same run)."""

    def median(mode: str, key: str) -> float:
        return statistics.median(result[key] for result in results[mode])

    off, on = median("off", "samples_per_s"), median("server", "samples_per_s")
    flushes = [result["flush_s"] for result in results["server"]]
    print(
        f"\njob: model=mlp data=synthetic trainer.max_steps={args.steps} "
        f"trainer.log_every_n_steps={args.log_every}, 2 workers, {args.reps} interleaved repetitions (medians)"
    )
    print(f"samples/s   tracking off {off:10,.0f}   to mlflow server {on:10,.0f}   ratio {on / off:.3f}")
    print(
        f"wall time   tracking off {median('off', 'wall_s'):9.1f} s  to mlflow server "
        f"{median('server', 'wall_s'):9.1f} s  ratio {median('server', 'wall_s') / median('off', 'wall_s'):.3f}"
    )
    print(
        f"training span (first to last report) off {median('off', 'train_s'):.2f} s, server "
        f"{median('server', 'train_s'):.2f} s; end of run (last report to return) off "
        f"{median('off', 'end_s'):.2f} s, server {median('server', 'end_s'):.2f} s"
    )
    print(
        f"end-of-run flush of buffered metrics: median {statistics.median(flushes) * 1000:.1f} ms, "
        f"max {max(flushes) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
