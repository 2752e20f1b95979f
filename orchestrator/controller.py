"""The job's state machine: start the worker group, route reports, react to failures, end.

Steppable: `step()` makes one transition, so tests drive it one event at a time with a fake group.
Collaborators come in through the constructor: the group factory, the metrics sink, the console
and the clock.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Protocol, Sequence

from orchestrator.errors import OrchestratorError
from orchestrator.group import GroupEvent, RankExited, RankLost, RankReport, WorkerGroup
from orchestrator.rendezvous import WorkerSpec
from orchestrator.reports import CheckpointReport, ErrorReport, LogReport, MetricsReport, ResultReport, StepReport

WAIT_S = 1.0
"""Longest wait for worker events before the controller checks its deadlines again."""
STOP_GRACE_S = 30.0
"""After a stop request, how long ranks get to reach an agreed step before they are killed."""


class Phase(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    DONE = "done"


@dataclass(frozen=True)
class JobOutcome:
    """How the job ended: MLflow's run status plus rank 0's result or the error."""

    status: str
    """FINISHED, FAILED or KILLED."""
    result: Optional[ResultReport] = None
    """Rank 0's result (with the trained weights) when the job finished or stopped cleanly."""
    rank_results: Mapping[int, ResultReport] = field(default_factory=dict)
    workers: tuple[WorkerSpec, ...] = ()
    """Where each rank ran (rank order), as the last worker group started them."""
    error: Optional[str] = None
    traceback: str = ""
    last_checkpoint: Optional[str] = None


class JobObserver(Protocol):
    """Something that follows the job (a monitor, a detector): told where ranks run and what they report."""

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        """A worker group (the first, or one after a restart) is running with these ranks."""

    def report(self, world_rank: int, report: object) -> None:
        """A rank sent a report (orchestrator.reports)."""

    def job_ended(self, outcome: "JobOutcome") -> None:
        """The job has its outcome; stop whatever was started for it (called on every path)."""


class Controller:
    """Runs one job to an outcome; `run()` always releases the group, whatever happens."""

    def __init__(self, group_factory: Callable[[], WorkerGroup], sink, console,
                 clock: Callable[[], float] = time.monotonic, observers: Sequence[JobObserver] = ()):
        self.group_factory = group_factory
        self.sink = sink
        self.console = console
        self.clock = clock
        self.observers = tuple(observers)
        self.phase = Phase.PENDING
        self.group: Optional[WorkerGroup] = None
        self.outcome: Optional[JobOutcome] = None
        self.results: dict[int, ResultReport] = {}
        self.exited: set[int] = set()
        self.last_checkpoint: Optional[str] = None
        self.stop_deadline: Optional[float] = None

    def run(self) -> JobOutcome:
        """Step until the job has an outcome; Ctrl-C stops the ranks, a second one kills them."""
        try:
            while self.phase is not Phase.DONE:
                try:
                    self.step()
                except KeyboardInterrupt:
                    self.interrupt()
        finally:
            if self.outcome is None:  # an unexpected error escaped the state machine
                self.outcome = JobOutcome(status="FAILED", error="the controller stopped on an internal error")
            for observer in self.observers:
                observer.job_ended(self.outcome)
            if self.group is not None:
                self.group.shutdown()
            self.console.close()
        return self.outcome

    def step(self) -> None:
        """Make one transition of the state machine."""
        if self.phase is Phase.PENDING:
            self._start()
        elif self.phase in (Phase.RUNNING, Phase.STOPPING):
            for event in self.group.wait(WAIT_S):
                self._handle(event)
                if self.phase is Phase.DONE:
                    return
            self._check_deadlines()

    def interrupt(self) -> None:
        """The user asked to stop: first ask the ranks, and if asked again, kill them."""
        if self.phase is Phase.RUNNING:
            self.console.message("stopping: the ranks finish their current step (Ctrl-C again to kill them)")
            self.group.request_stop()
            self.phase = Phase.STOPPING
            self.stop_deadline = self.clock() + STOP_GRACE_S
        else:
            self._end("KILLED", error="interrupted by the user")

    def _start(self) -> None:
        self.group = self.group_factory()
        try:
            self.group.start()
        except OrchestratorError as error:
            self._end("FAILED", error=str(error))
            return
        self.phase = Phase.RUNNING
        for observer in self.observers:
            observer.group_started(self.group.specs)

    def _handle(self, event: GroupEvent) -> None:
        if isinstance(event, RankReport):
            self._route(event.world_rank, event.report)
        elif isinstance(event, RankLost):
            self._fail(f"rank {event.world_rank} on {event.node_ip} died: {event.reason}")
        elif isinstance(event, RankExited):
            self.exited.add(event.world_rank)
            if len(self.exited) == len(self.group.specs):
                self._all_exited()

    def _route(self, world_rank: int, report: object) -> None:
        for observer in self.observers:
            observer.report(world_rank, report)
        if isinstance(report, MetricsReport):
            self.sink.log_metrics(report.metrics, report.step)
            self.console.on_metrics(report)
        elif isinstance(report, StepReport):
            self.console.on_step(report)
        elif isinstance(report, LogReport):
            self.console.on_log(report)
        elif isinstance(report, CheckpointReport):
            self.last_checkpoint = report.path
        elif isinstance(report, ResultReport):
            self.results[world_rank] = report
        elif isinstance(report, ErrorReport):
            self._fail(f"rank {report.world_rank} on {report.node_ip} raised {report.error_type}: {report.message}",
                       report.traceback)

    def _fail(self, summary: str, traceback_text: str = "") -> None:
        if self.phase is Phase.STOPPING:
            self._end("KILLED", error="interrupted by the user")
            return
        self._end("FAILED", error=summary, traceback=traceback_text)

    def _all_exited(self) -> None:
        result = self.results.get(0)
        digests = {rank: report.params_digest for rank, report in self.results.items()}
        if result is None:
            self._fail("every rank exited but rank 0 sent no result")
        elif len(set(digests.values())) > 1:
            differing = sorted(rank for rank, digest in digests.items() if digest != digests[0])
            self._fail(f"the ranks ended with different parameters (ranks {differing} differ from rank 0): "
                       f"the DDP replicas diverged, so the trained model is not trustworthy")
        elif result.stopped or self.phase is Phase.STOPPING:
            self._end("KILLED", error="interrupted by the user", result=result)
        else:
            self._end("FINISHED", result=result)

    def _check_deadlines(self) -> None:
        if self.phase is Phase.STOPPING and self.clock() >= self.stop_deadline:
            self._end("KILLED", error=f"interrupted by the user; ranks did not stop within {STOP_GRACE_S:g} s")

    def _end(self, status: str, error: Optional[str] = None, traceback: str = "",
             result: Optional[ResultReport] = None) -> None:
        workers = tuple(self.group.specs) if self.group is not None else ()
        self.outcome = JobOutcome(status=status, result=result, rank_results=dict(self.results), error=error,
                                  traceback=traceback, last_checkpoint=self.last_checkpoint, workers=workers)
        self.phase = Phase.DONE
