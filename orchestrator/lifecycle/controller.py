"""The job's state machine: start the worker group, route reports, react to failures, end.

Steppable: `step()` makes one transition, so tests drive it one event at a time with a fake group.
Collaborators come in through the constructor: the group factory, the metrics sink, the console,
the clock, the failure policy and observers.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Protocol, Sequence

from orchestrator.config.schema import FailureConfig
from orchestrator.errors import LaunchError, OrchestratorError
from orchestrator.lifecycle.failure_policy import Failure, FailureKind, classify_error, decide
from orchestrator.lifecycle.rank_reports import (
    AttemptStartReport,
    CheckpointReport,
    ErrorReport,
    LogReport,
    MetricsReport,
    ResultReport,
    StepReport,
)
from orchestrator.lifecycle.worker_group import GroupEvent, RankExited, RankLost, RankReport, WorkerGroup
from orchestrator.planning.rank_specs import WorkerSpec

WAIT_S = 1.0
"""Longest wait for worker events before the controller checks its deadlines again."""
SETTLE_S = 3.0
"""After a broken collective, how long to wait for the death notice that usually explains it."""
STOP_GRACE_S = 30.0
"""After a stop request, how long ranks get to reach an agreed step before they are killed."""
USER_STOP = "interrupted by the user"
"""The reason of a stop the user asked for (Ctrl-C, SIGTERM)."""


class Phase(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    DONE = "done"


@dataclass(frozen=True)
class Attempt:
    """One start of the worker group in this command: its number (the restarts before it) and its ranks."""

    number: int
    workers: tuple[WorkerSpec, ...]


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
    attempts: tuple[Attempt, ...] = ()
    """Where the ranks ran in every attempt of this command that started, first first (the last one is `workers`)."""
    error: Optional[str] = None
    traceback: str = ""
    last_checkpoint: Optional[str] = None
    restarts: int = 0


@dataclass
class RestartRecord:
    """One restart: what failed, where the job resumed, and how long getting back took."""

    number: int
    failure: Failure
    resumed_from_step: int
    began_at: float
    began_wall: float
    """The same moment as `began_at` in wall-clock seconds, comparable with other processes' clocks."""
    timings: dict[str, float] = field(default_factory=dict)


class JobObserver(Protocol):
    """Something that follows the job (a monitor, a detector): told where ranks run and what they report."""

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        """A worker group (the first, or one after a restart) is running with these ranks."""

    def report(self, world_rank: int, report: object) -> None:
        """A rank sent a report (orchestrator.lifecycle.rank_reports)."""

    def job_ended(self, outcome: "JobOutcome") -> None:
        """The job has its outcome; stop whatever was started for it (called on every path)."""


class StopRequests:
    """Requests to stop the job that come from other threads (a sweep's driver, its early-stopping rule).

    Thread-safe. The controller takes them between two steps and handles each like a Ctrl-C: the
    first asks the ranks to stop at their next agreed step, a later one ends the job at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: list[str] = []

    def request(self, reason: str) -> None:
        """Ask the job to stop; `reason` becomes the KILLED run's error."""
        with self._lock:
            self._reasons.append(reason)

    def take(self) -> list[str]:
        """The requests made since the last call, oldest first."""
        with self._lock:
            reasons, self._reasons = self._reasons, []
        return reasons


class Controller:
    """Runs one job to an outcome; `run()` always releases the group, whatever happens."""

    def __init__(self, group_factory: Callable[[], WorkerGroup], sink, console,
                 clock: Callable[[], float] = time.monotonic, observers: Sequence[JobObserver] = (),
                 failure_policy: FailureConfig = FailureConfig(max_restarts=0), resume_from: Optional[str] = None,
                 resumed_step: int = 0, watch_hangs: bool = True,
                 find_checkpoint: Callable[[], Optional[tuple[str, int]]] = lambda: None,
                 wall_clock: Callable[[], float] = time.time,
                 stop_requests: Optional[StopRequests] = None, entrypoint: str = "builtin",
                 startup_timeout_s: Optional[float] = None):
        self.group_factory = group_factory
        self.sink = sink
        self.console = console
        self.clock = clock
        self.wall_clock = wall_clock  # only for records read outside this process (restart.N.began_at)
        self.observers = tuple(observers)
        self.policy = failure_policy
        self.watch_hangs = watch_hangs
        # an attempt's start (a new process imports torch, joins the rendezvous, loads the checkpoint) is not a
        # step: a rank gets this long for its first step, then failure.hang_timeout_s between steps
        self.startup_timeout_s = max(failure_policy.hang_timeout_s, startup_timeout_s or 0.0)
        self.stepping: set[int] = set()
        self.entrypoint = entrypoint  # what the ranks run: says how they stop
        self.find_checkpoint = find_checkpoint
        self.phase = Phase.PENDING
        self.group: Optional[WorkerGroup] = None
        self.outcome: Optional[JobOutcome] = None
        self.results: dict[int, ResultReport] = {}
        self.exited: set[int] = set()
        self.last_checkpoint: Optional[str] = resume_from
        self.checkpoint_step = resumed_step
        self.stop_deadline: Optional[float] = None
        self.stop_requests = stop_requests if stop_requests is not None else StopRequests()
        self.stop_reason = USER_STOP
        self.last_progress: dict[int, float] = {}
        self.restarts: list[RestartRecord] = []
        self.attempts: list[Attempt] = []
        self.failure: Optional[Failure] = None
        self.suspect: Optional[Failure] = None
        self.rebuild = False
        self.settle_deadline = 0.0
        self.lost: set[int] = set()

    def run(self) -> JobOutcome:
        """Step until the job has an outcome; Ctrl-C stops the ranks, a second one kills them."""
        try:
            while self.phase is not Phase.DONE:
                try:
                    for reason in self.stop_requests.take():
                        if self.phase is not Phase.DONE:
                            self.interrupt(reason)
                    if self.phase is not Phase.DONE:
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
        elif self.phase is Phase.RESTARTING:
            self._restart()
        elif self.phase in (Phase.RUNNING, Phase.STOPPING):
            for event in self.group.wait(WAIT_S):
                if self.phase is Phase.DONE:
                    return
                if self.phase is Phase.RESTARTING:  # still note every death: those workers need replacing
                    if isinstance(event, RankLost):
                        self.lost.add(event.world_rank)
                    continue
                self._handle(event)
            if self.phase in (Phase.RUNNING, Phase.STOPPING):
                self._check_deadlines()

    def interrupt(self, reason: str = USER_STOP) -> None:
        """Stop the job (the user asked, or `reason`): first ask the ranks, and if asked again, kill them."""
        if self.phase is Phase.RUNNING:
            self.console.message(stop_message(reason, self.entrypoint))
            self.group.request_stop()
            self.phase = Phase.STOPPING
            self.stop_reason = reason
            self.stop_deadline = self.clock() + STOP_GRACE_S
        else:
            self._end("KILLED", error=self.stop_reason if self.phase is Phase.STOPPING else reason)

    def _start(self) -> None:
        self.group = self.group_factory()
        try:
            self.group.start(self.last_checkpoint, attempt=len(self.restarts))
        except LaunchError as error:
            self._launch_failed(error)
            return
        except OrchestratorError as error:
            self._end("FAILED", error=str(error))
            return
        self._running()

    def _launch_failed(self, error: LaunchError) -> None:
        """A group that could not be (re)started: rebuild it from scratch if the policy allows."""
        if not error.retryable:
            self._end("FAILED", error=str(error))
            return
        self.rebuild = True  # the half-started group is not trusted: a new one replaces it whole
        self.phase = Phase.RUNNING  # so that _fail decides on it like on any other failure
        self._fail(Failure(FailureKind.LAUNCH, str(error)))

    def _running(self) -> None:
        self.phase = Phase.RUNNING
        self.results, self.exited, self.lost, self.suspect = {}, set(), set(), None
        now = self.clock()
        specs = tuple(self.group.specs) if self.group is not None else ()
        self.last_progress = {spec.world_rank: now for spec in specs}
        self.stepping = set()
        self.attempts.append(Attempt(len(self.restarts), specs))
        for observer in self.observers:
            observer.group_started(specs)

    def _handle(self, event: GroupEvent) -> None:
        if isinstance(event, RankReport):
            self._route(event.world_rank, event.report)
        elif isinstance(event, RankLost):
            self.lost.add(event.world_rank)
            self._fail(Failure(FailureKind.WORKER_DIED, f"rank {event.world_rank} on {event.node_ip} died: "
                               f"{event.reason}", event.world_rank, event.node_ip))
        elif isinstance(event, RankExited):
            self.exited.add(event.world_rank)
            if len(self.exited) == len(self.group.specs) and self.phase is not Phase.DONE:
                self._all_exited()

    def _route(self, world_rank: int, report: object) -> None:
        for observer in self.observers:
            observer.report(world_rank, report)
        if isinstance(report, (StepReport, AttemptStartReport)):
            self.last_progress[world_rank] = self.clock()
            self.stepping.add(world_rank)
        if isinstance(report, MetricsReport):
            self.sink.log_metrics(report.metrics, report.step)
            if self.entrypoint == "script":
                self.console.on_script_metrics(report)
            else:
                self.console.on_metrics(report)
        elif isinstance(report, StepReport):
            self.console.on_step(report)
        elif isinstance(report, LogReport):
            self.console.on_log(report)
        elif isinstance(report, CheckpointReport):
            self.last_checkpoint, self.checkpoint_step = report.path, report.step
            self.sink.checkpoint_saved(report.path, report.step)
        elif isinstance(report, AttemptStartReport):
            self._attempt_started(report)
        elif isinstance(report, ResultReport):
            self.results[world_rank] = report
        elif isinstance(report, ErrorReport):
            self._fail(Failure(classify_error(report), f"rank {report.world_rank} on {report.node_ip} raised "
                               f"{report.error_type}: {report.message}", report.world_rank, report.node_ip,
                               report.traceback))

    def _fail(self, failure: Failure, settled: bool = False) -> None:
        if self.phase is Phase.STOPPING:
            self._end("KILLED", error=self.stop_reason)
            return
        if failure.kind is FailureKind.COMMUNICATION and not settled:
            if self.suspect is not None:
                return  # more echoes of the same breakage
            # a broken collective is usually the echo of a peer that died: wait briefly for the cause
            self.suspect, self.settle_deadline = failure, self.clock() + SETTLE_S
            return
        self.suspect = None
        decision = decide(failure, len(self.restarts), self.policy)
        if not decision.restart:
            # say why it was not restarted where restarts were possible
            explain = bool(self.restarts) or self.policy.max_restarts != 0
            summary = f"{failure.summary} ({decision.reason})" if explain else failure.summary
            self._end("FAILED", error=summary, traceback=failure.traceback)
            return
        self.console.message(f"{failure.summary}; {decision.reason} from step {self.checkpoint_step}")
        self.failure = failure
        self.phase = Phase.RESTARTING

    def _restart(self) -> None:
        found = self.find_checkpoint()  # a checkpoint completed just before the failure may not be reported yet
        if found is not None and found[1] > self.checkpoint_step:
            self.last_checkpoint, self.checkpoint_step = found
        lost = set(self.lost)
        if self.failure.kind is FailureKind.HANG and self.failure.world_rank is not None:
            lost.add(self.failure.world_rank)
        record = RestartRecord(len(self.restarts) + 1, self.failure, self.checkpoint_step, self.clock(),
                               self.wall_clock())
        self.restarts.append(record)
        try:
            record.timings.update(self._relaunch(lost))
        except LaunchError as error:
            self._launch_failed(LaunchError(f"restart {record.number} failed: {error}", error.retryable))
            return
        self.sink.log_metrics({"restarts": float(len(self.restarts))}, record.resumed_from_step)
        self.sink.set_tags(_restart_tags(record))
        self._running()

    def _relaunch(self, lost: set[int]) -> Mapping[str, float]:
        """Replace only the lost workers; after a failed relaunch, free everything and start a new group."""
        if not self.rebuild:
            return self.group.restart(lost, self.last_checkpoint, len(self.restarts))
        started = self.clock()
        self.group.shutdown()
        self.group = self.group_factory()
        self.rebuild = False
        self.group.start(self.last_checkpoint, attempt=len(self.restarts))
        return {"rebuild": self.clock() - started}

    def _attempt_started(self, report: AttemptStartReport) -> None:
        if report.world_rank != 0 or not self.restarts or "first_step_s" in self.restarts[-1].timings:
            return
        record = self.restarts[-1]
        record.timings.update({f"{name}_s": seconds for name, seconds in report.timings.items()})
        record.timings["to_first_step_s"] = self.clock() - record.began_at
        self.sink.set_tags({f"restart.{record.number}.{name}": f"{value:.3f}" for name, value in record.timings.items()})
        self.sink.set_tags({f"restart.{record.number}.first_step_at": f"{report.wall_time:.3f}"})

    def _all_exited(self) -> None:
        if self.suspect is not None:  # every rank left through a broken collective
            self._fail(self.suspect, settled=True)
            return
        result = self.results.get(0)
        digests = {rank: report.params_digest for rank, report in self.results.items()}
        if self.phase is Phase.STOPPING:
            self._end("KILLED", error=self.stop_reason, result=result)
        elif result is None:
            self._end("FAILED", error="every rank exited but rank 0 sent no result")
        elif len(set(digests.values())) > 1:
            differing = sorted(rank for rank, digest in digests.items() if digest != digests[0])
            self._end("FAILED", error=f"the ranks ended with different parameters (ranks {differing} differ from "
                      f"rank 0): the DDP replicas diverged, so the trained model is not trustworthy")
        elif result.stopped:
            self._end("KILLED", error=self.stop_reason, result=result)
        else:
            self._end("FINISHED", result=result)

    def _check_deadlines(self) -> None:
        now = self.clock()
        if self.suspect is not None and now >= self.settle_deadline:
            self._fail(self.suspect, settled=True)  # no death explained it: the collective itself failed
            return
        if self.phase is Phase.STOPPING and now >= self.stop_deadline:
            self._end("KILLED", error=f"{self.stop_reason}; ranks did not stop within {STOP_GRACE_S:g} s")
            return
        if self.phase is not Phase.RUNNING or not self.watch_hangs:
            return
        for world_rank, seen in sorted(self.last_progress.items()):
            started = world_rank in self.stepping
            limit = self.policy.hang_timeout_s if started else self.startup_timeout_s
            if world_rank not in self.exited and now - seen > limit:
                spec = self.group.specs[world_rank]
                what = "finished no step for" if started else "finished no first step in"
                setting = (f"failure.hang_timeout_s={self.policy.hang_timeout_s:g}" if started or
                           limit == self.policy.hang_timeout_s else f"scaling.rendezvous_timeout_s={limit:g}")
                self._fail(Failure(FailureKind.HANG, f"rank {world_rank} on {spec.node_ip} {what} {now - seen:.0f} s "
                                   f"({setting})", world_rank, spec.node_ip))
                return

    def _end(self, status: str, error: Optional[str] = None, traceback: str = "",
             result: Optional[ResultReport] = None) -> None:
        workers = tuple(self.group.specs) if self.group is not None else ()
        self.outcome = JobOutcome(status=status, result=result, rank_results=dict(self.results), workers=workers,
                                  attempts=tuple(self.attempts), error=error, traceback=traceback,
                                  last_checkpoint=self.last_checkpoint, restarts=len(self.restarts))
        self.phase = Phase.DONE


def stop_message(reason: str, entrypoint: str) -> str:
    """What the console says when the job starts stopping: how the ranks are asked to stop, per entrypoint."""
    if entrypoint == "script":
        how = f"every rank's script gets SIGTERM and {STOP_GRACE_S:g} s to exit"
    else:
        how = "the ranks finish their current step"
    if reason == USER_STOP:
        return f"stopping: {how} (Ctrl-C again to kill them)"
    return f"stopping: {reason}; {how}"


def _restart_tags(record: RestartRecord) -> dict[str, str]:
    failure = record.failure
    tags = {"reason": failure.summary, "kind": failure.kind.value, "resumed_from_step": str(record.resumed_from_step),
            "began_at": f"{record.began_wall:.3f}"}
    if failure.world_rank is not None:
        tags["rank"] = str(failure.world_rank)
    if failure.node_ip is not None:
        tags["node"] = failure.node_ip
    tags.update({name: f"{seconds:.3f}" for name, seconds in record.timings.items()})
    return {f"restart.{record.number}.{key}": value for key, value in tags.items()}
