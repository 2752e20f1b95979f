"""Who follows the job: the observer protocol, and the observers that route the ranks' reports.

The controller decides transitions only; where a report goes (the run's metrics and checkpoints, the
console's progress line, the restart records) is decided here, by observers the controller calls in order.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

from orchestrator.lifecycle.rank_reports import (
    AttemptStartReport,
    CheckpointReport,
    LogReport,
    MetricsReport,
    StepReport,
)
from orchestrator.lifecycle.states import JobOutcome, RestartRecord
from orchestrator.planning.rank_specs import WorkerSpec


class JobObserver(Protocol):
    """Something that follows the job (a monitor, a detector): told where ranks run and what they report.

    One that takes only some kinds of reports may name them in a class attribute `report_kinds` (a tuple
    of report classes): it is then told of those only, so that each of 32,768 ranks' heartbeats a second
    does not visit observers that ignore it.
    """

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        """A worker group (the first, or one after a restart) is running with these ranks."""

    def report(self, world_rank: int, report: object) -> None:
        """A rank sent a report (orchestrator.lifecycle.rank_reports)."""

    def job_ended(self, outcome: JobOutcome) -> None:
        """The job has its outcome; stop whatever was started for it (called on every path)."""


@runtime_checkable
class RestartObserver(JobObserver, Protocol):
    """An observer that is also told of each restart, once its new group is running."""

    def restarted(self, record: RestartRecord) -> None:
        """The job restarted as `record` says (before `group_started` of the new group)."""


class Observers:
    """The job's observers as one, called in order; only RestartObservers are told of restarts."""

    def __init__(self, observers: Sequence[JobObserver]):
        self.observers = tuple(observers)
        self._takers: dict[type, tuple[JobObserver, ...]] = {}
        """Report kind -> the observers that take it, in order (every rank's heartbeat asks)."""

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.group_started(specs)

    def report(self, world_rank: int, report: object) -> None:
        """Tell every observer that takes reports of this kind (all kinds unless it names them in `report_kinds`)."""
        takers = self._takers.get(type(report))
        if takers is None:
            takers = self._takers[type(report)] = tuple(
                observer for observer in self.observers if _takes(observer, type(report))
            )
        for observer in takers:
            observer.report(world_rank, report)

    def restarted(self, record: RestartRecord) -> None:
        """Tell the observers that follow restarts."""
        for observer in self.observers:
            if isinstance(observer, RestartObserver):
                observer.restarted(record)

    def job_ended(self, outcome: JobOutcome) -> None:
        """Tell every observer."""
        for observer in self.observers:
            observer.job_ended(outcome)


def _takes(observer: JobObserver, kind: type) -> bool:
    kinds = getattr(observer, "report_kinds", None)
    return kinds is None or issubclass(kind, kinds)


class RunRecords:
    """Implements JobObserver: the ranks' metrics and checkpoints go to the run's sink."""

    report_kinds = (MetricsReport, CheckpointReport)

    def __init__(self, sink):
        self.sink = sink

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        """Nothing to record."""

    def report(self, world_rank: int, report: object) -> None:
        """Log metrics; note a completed checkpoint."""
        if isinstance(report, MetricsReport):
            self.sink.log_metrics(report.metrics, report.step)
        elif isinstance(report, CheckpointReport):
            self.sink.checkpoint_saved(report.path, report.step)

    def job_ended(self, outcome: JobOutcome) -> None:
        """The job runner finishes the run."""


class ConsoleProgress:
    """Implements JobObserver: metrics, heartbeats and a script's printed lines go to the console."""

    report_kinds = (MetricsReport, StepReport, LogReport)

    def __init__(self, console, entrypoint: str):
        self.console = console
        self.entrypoint = entrypoint  # a script's metrics come without heartbeats: they get lines of their own

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        """Nothing to show."""

    def report(self, world_rank: int, report: object) -> None:
        """Update the progress line, or print a rank's line."""
        if isinstance(report, StepReport):  # every rank's heartbeat: the console draws rank 0's only
            if report.world_rank == 0:
                self.console.on_step(report)
        elif isinstance(report, MetricsReport):
            if self.entrypoint == "script":
                self.console.on_script_metrics(report)
            else:
                self.console.on_metrics(report)
        elif isinstance(report, LogReport):
            self.console.on_log(report)

    def job_ended(self, outcome: JobOutcome) -> None:
        """The controller closes the console itself, after the group is shut down."""


class RestartRecords:
    """Implements RestartObserver: each restart's cause and timings become the run's tags and `restarts` metric.

    The timings of a restart's first step come with rank 0's AttemptStartReport of the new attempt.
    """

    report_kinds = (AttemptStartReport,)

    def __init__(self, sink, clock: Callable[[], float] = time.monotonic):
        self.sink = sink
        self.clock = clock  # the controller's: a record's began_at is on it
        self.latest: Optional[RestartRecord] = None
        self.resizes = 0
        self.excluded: list[str] = []
        """The nodes (IPs) the job stopped using, in order."""

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        """Nothing to record."""

    def restarted(self, record: RestartRecord) -> None:
        """Count the restart at the step it resumed from, and tag its cause and timings."""
        self.latest = record
        self.sink.log_metrics({"restarts": float(record.number)}, record.resumed_from_step)
        self.sink.set_tags(restart_tags(record))
        if record.resized:
            self.resizes += 1
            self.sink.set_tags(resize_tags(self.resizes, record))
        if record.excluded_node is not None:
            self.excluded.append(record.excluded_node)
            self.sink.set_tags({"excluded_nodes": ",".join(self.excluded)})

    def report(self, world_rank: int, report: object) -> None:
        """Tag how long the newest restart took to its first step (once, from rank 0's report)."""
        record = self.latest
        if (
            not isinstance(report, AttemptStartReport)
            or report.world_rank != 0
            or record is None
            or "first_step_s" in record.timings
        ):
            return
        timings = {**record.timings, **{f"{name}_s": seconds for name, seconds in report.timings.items()}}
        timings["to_first_step_s"] = self.clock() - record.began_at
        self.latest = replace(record, timings=timings)
        self.sink.set_tags({f"restart.{record.number}.{name}": f"{value:.3f}" for name, value in timings.items()})
        self.sink.set_tags({f"restart.{record.number}.first_step_at": f"{report.wall_time:.3f}"})

    def job_ended(self, outcome: JobOutcome) -> None:
        """Nothing to release."""


def routing_observers(sink, console, entrypoint: str, clock: Callable[[], float] = time.monotonic) -> list[JobObserver]:
    """Where the ranks' reports go: the run's records, the console, the restart records (after any others)."""
    return [RunRecords(sink), ConsoleProgress(console, entrypoint), RestartRecords(sink, clock)]


def restart_tags(record: RestartRecord) -> dict[str, str]:
    """The run's tags for one restart: `restart.<N>.<key>` for its cause, where it resumed and its timings."""
    failure = record.failure
    tags = {
        "reason": failure.summary,
        "kind": failure.kind.value,
        "resumed_from_step": str(record.resumed_from_step),
        "began_at": f"{record.began_wall:.3f}",
    }
    if failure.world_rank is not None:
        tags["rank"] = str(failure.world_rank)
    if failure.node_ip is not None:
        tags["node"] = failure.node_ip
    if record.workers_after:
        tags["workers"] = f"{record.workers_before}->{record.workers_after}"
    if record.excluded_node is not None:
        tags["excluded_node"] = record.excluded_node
    tags.update({name: f"{seconds:.3f}" for name, seconds in record.timings.items()})
    return {f"restart.{record.number}.{key}": value for key, value in tags.items()}


RESIZE_REASONS = {"preempted": "preempted", "resize": "grow"}
"""The reason tag of a resize, by the kind of what caused it (any other failure: the workers were lost)."""


def resize_tags(number: int, record: RestartRecord) -> dict[str, str]:
    """The run's tags for its `number`-th resize: `resize.<N>.<key>` for why, from and to how many workers, and
    the step it took effect at (the checkpoint the smaller or larger world resumed from)."""
    tags = {
        "reason": RESIZE_REASONS.get(record.failure.kind.value, "lost"),
        "from": str(record.workers_before),
        "to": str(record.workers_after),
        "step": str(record.resumed_from_step),
        "restart": str(record.number),
    }
    return {f"resize.{number}.{key}": value for key, value in tags.items()}
