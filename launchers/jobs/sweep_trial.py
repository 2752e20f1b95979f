"""One trial of a sweep, run on a thread of the sweep's driver: its job, its console lines, its objective."""

from __future__ import annotations

import re
import threading
import time
from typing import TYPE_CHECKING, Collection, Optional, Sequence, TextIO

from launchers.jobs.job_runner import TrialLink, run_job
from launchers.workers.worker_shelf import WorkerShelf
from orchestrator.cli.console import Console
from orchestrator.lifecycle.controller import StopRequests
from orchestrator.lifecycle.rank_reports import MetricsReport, StepReport
from orchestrator.redaction import redact_value
from orchestrator.sweep.judging import StopRule
from orchestrator.sweep.trials import FAILED, KILLED, TrialRecord, TrialSpec, varying
from orchestrator.tracking.metrics_sink import MetricsSink

if TYPE_CHECKING:
    from orchestrator.lifecycle.controller import JobOutcome
    from orchestrator.planning.rank_specs import WorkerSpec

TRIAL_TAG = "orchestrator.trial"
OVERRIDE_TAG_PREFIX = "orchestrator.override."
_TAG_UNSAFE = re.compile(r"[^\w\-. /]")  # MLflow tag keys: alphanumerics, _ - . space /


class LinePrefixer:
    """A text stream that writes whole lines, each after a prefix, under a lock all trials share.

    Trials print side by side; whole lines keep their output readable and tell the trials apart.
    """

    def __init__(self, stream: TextIO, prefix: str, lock: threading.Lock):
        self.stream = stream
        self.prefix = prefix
        self.lock = lock
        self.partial = ""

    def write(self, text: str) -> int:
        """Keep a partial line; write every complete one with the prefix."""
        # a terminal's redrawn progress line ("\r" + erase line) becomes a line of its own
        text = text.replace("\r\x1b[K", "\n").replace("\r", "\n")
        *lines, self.partial = (self.partial + text).split("\n")
        lines = [line for line in lines if line]
        if lines:
            with self.lock:
                self.stream.write("".join(f"{self.prefix}{line}\n" for line in lines))
                self.stream.flush()
        return len(text)

    def flush(self) -> None:
        """Whole lines are written at once; a partial one waits for its end."""

    def isatty(self) -> bool:
        """Never a terminal: progress lines are printed, not redrawn in place."""
        return False


def trial_console(stderr: TextIO, stdout: TextIO, number: int, lock: threading.Lock) -> Console:
    """A non-interactive console whose lines are prefixed with the trial's number."""
    prefix = f"[trial {number}] "
    return Console(LinePrefixer(stderr, prefix, lock), interactive=False, out=LinePrefixer(stdout, prefix, lock))


class TrialWatch:
    """Implements orchestrator.lifecycle.controller.JobObserver for a sweep: the trial's objective and early stopping.

    Runs on the trial's controller thread; the stop it requests is taken by that controller. `rule` is the
    sweep's median rule or the sweeper's judge of this trial (orchestrator.sweep.judging).
    """

    def __init__(self, objective: str, rule: Optional[StopRule]):
        self.objective = objective
        self.rule = rule
        self.stop_requests = StopRequests()
        self.curve: dict[int, float] = {}
        self.last: Optional[float] = None
        self.total_steps: Optional[int] = None
        self.stopped_early: Optional[str] = None
        self.sink: Optional[MetricsSink] = None
        """The trial's sink, from `observers` on (the job runner calls it before the job starts)."""

    def observers(self, sink: MetricsSink) -> Sequence["TrialWatch"]:
        """The observers of the trial's job (given its sink, which early stopping tags)."""
        self.sink = sink
        return [self]

    @property
    def run_id(self) -> Optional[str]:
        """The trial's run, once it has one."""
        return None if self.sink is None else self.sink.run_id

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        """Nothing to do: the sweep books the trial's resources when it starts it."""

    @property
    def stopped_status(self) -> str:
        """The trial's status when its rule stopped it (STOPPED for the median rule, PRUNED for Optuna's)."""
        assert self.rule is not None  # only a trial with a rule is stopped early
        return self.rule.stopped_status

    def report(self, world_rank: int, report: object) -> None:
        """Follow the objective; stop the trial when its rule says so (the median rule, or Optuna's pruner)."""
        if isinstance(report, StepReport):
            self.total_steps = report.total_steps
        if not isinstance(report, MetricsReport) or self.objective not in report.metrics:
            return
        value = float(report.metrics[self.objective])
        self.curve[report.step] = self.last = value
        if self.rule is None or self.stopped_early is not None:
            return
        # the rule sees every evaluation (an Optuna trial records each one), the last included
        reason = self.rule.verdict(report.step, value)
        # but the last one ends the trial anyway: stopping there would only mark a complete trial KILLED
        final = self.total_steps is not None and report.step >= self.total_steps
        if reason is not None and not final:
            self.stopped_early = reason
            assert self.sink is not None  # reports come from the job, which runs after observers(sink)
            self.sink.set_tags({self.rule.stopped_tag: reason})
            self.stop_requests.request(reason)

    def job_ended(self, outcome: JobOutcome) -> None:
        """Nothing to release."""


def trial_tags(spec: TrialSpec, sweep_id: str, fixed_keys: Collection[str]) -> dict[str, str]:
    """The child run's tags: its number, its sweep, and one tag per override the sweep chose for it."""
    tags = {TRIAL_TAG: str(spec.number), f"{TRIAL_TAG}.sweep_id": sweep_id}
    for override in varying(spec.overrides, fixed_keys):
        key, _, value = override.partition("=")
        tags[OVERRIDE_TAG_PREFIX + _TAG_UNSAFE.sub("_", key.lstrip("+~"))] = redact_value(value)
    return tags


def run_trial(
    spec: TrialSpec,
    console: Console,
    watch: TrialWatch,
    parent_run_id: Optional[str],
    tags: dict[str, str],
    shelf: Optional[WorkerShelf] = None,
) -> TrialRecord:
    """Run the trial's job to its end and say how it ended; an error is the trial's, never the sweep's.

    Its run is a child of `parent_run_id` named after its number (`trial-3`, `<tracking.run_name>-3`). With a
    `shelf` (sweep.reuse_workers) it runs on the idle group reserved for it there, if any, and leaves its
    group there.
    """
    run_name = f"{spec.job.tracking.run_name or 'trial'}-{spec.number}"
    started_at, started = time.time(), time.monotonic()
    link = TrialLink(
        parent_run_id=parent_run_id,
        run_name=run_name,
        tags=tags,
        observers=watch.observers,
        stop_requests=watch.stop_requests,
        shelf=shelf,
        owner=spec.number,
    )
    summary = None
    error_text: Optional[str]
    run_id: Optional[str]
    try:
        summary = run_job(spec.job, console, spec.overrides, hydra_dir=spec.hydra_dir, link=link)
    except Exception as error:  # a trial that could not run (its store, its plan): recorded, the sweep goes on
        status, error_text, run_id = FAILED, f"{type(error).__name__}: {error}", watch.run_id
    else:
        outcome = summary.outcome
        status = watch.stopped_status if outcome.status == KILLED and watch.stopped_early else outcome.status
        error_text, run_id = outcome.error, summary.run_id
    objective = None if status == FAILED else watch.last  # a failed trial's last value is no result
    # the job's own duration where it has one: the same number its run records in MLflow
    duration_s = summary.duration_s if summary is not None else time.monotonic() - started
    return TrialRecord(
        number=spec.number,
        overrides=spec.overrides,
        status=status,
        objective=objective,
        duration_s=duration_s,
        run_id=run_id,
        error=error_text,
        started_at=started_at,
        ended_at=time.time(),
    )
