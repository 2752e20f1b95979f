"""The controller's states and its pure transitions: what is valid in each state, and what an event makes of it.

Each state is a frozen dataclass and a transition returns a new one. Nothing here touches the worker
group, an observer or a clock: the controller does that and passes in what it got (the time, the ranks).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional, Sequence, TypeVar, Union

from orchestrator.config.schema import FailureConfig
from orchestrator.errors import LaunchError
from orchestrator.lifecycle.failure_policy import Failure, FailureKind, classify_error, decide
from orchestrator.lifecycle.rank_reports import (
    AttemptStartReport,
    CheckpointReport,
    ErrorReport,
    ResultReport,
    StepReport,
)
from orchestrator.lifecycle.worker_group import GroupEvent, RankLost, RankReport
from orchestrator.planning.rank_specs import WorkerSpec

SETTLE_S = 3.0
"""After a broken collective, how long to wait for the death notice that usually explains it."""
STOP_GRACE_S = 30.0
"""After a stop request, how long ranks get to reach an agreed step before they are killed."""
USER_STOP = "interrupted by the user"
"""The reason of a stop the user asked for (Ctrl-C, SIGTERM)."""


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


@dataclass(frozen=True)
class RestartRecord:
    """One restart: what failed, where the job resumed, and how long getting back took."""

    number: int
    failure: Failure
    resumed_from_step: int
    began_at: float
    began_wall: float
    """The same moment as `began_at` in wall-clock seconds, comparable with other processes' clocks."""
    timings: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ControllerSettings:
    """How the controller judges the job: its failure policy, whether it watches for hangs, what the ranks run."""

    failure_policy: FailureConfig = FailureConfig(max_restarts=0)
    watch_hangs: bool = True
    startup_timeout_s: Optional[float] = None
    """How long a rank may take to its first step (scaling.rendezvous_timeout_s); never less than a hang."""
    entrypoint: str = "builtin"
    """What the ranks run (builtin or script): says how they stop."""

    @property
    def startup_limit_s(self) -> float:
        """An attempt's start (imports, rendezvous, loading the checkpoint) is no step: the limit to its first one."""
        return max(self.failure_policy.hang_timeout_s, self.startup_timeout_s or 0.0)


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint the job starts from (None for a new job) and its step."""

    checkpoint: Optional[str] = None
    step: int = 0


@dataclass(frozen=True)
class History:
    """What lasts across states: the attempts started, the restarts made, the newest checkpoint."""

    attempts: tuple[Attempt, ...] = ()
    restarts: tuple[RestartRecord, ...] = ()
    checkpoint: Optional[str] = None
    checkpoint_step: int = 0

    @classmethod
    def resuming(cls, point: ResumePoint) -> "History":
        """The history of a job that starts from `point`."""
        return cls(checkpoint=point.checkpoint, checkpoint_step=point.step)

    def with_newest(self, found: Optional[tuple[str, int]]) -> "History":
        """Take a checkpoint found on disk when it is newer than the newest reported one."""
        if found is None or found[1] <= self.checkpoint_step:
            return self
        return replace(self, checkpoint=found[0], checkpoint_step=found[1])

    def with_restart(self, record: RestartRecord) -> "History":
        """This history with `record` as its newest restart (a new one, or the newest one updated)."""
        earlier = self.restarts[:-1] if self.restarts and self.restarts[-1].number == record.number else self.restarts
        return replace(self, restarts=earlier + (record,))


@dataclass(frozen=True)
class AttemptProgress:
    """One attempt of the group as the controller follows it."""

    workers: tuple[WorkerSpec, ...] = ()
    results: Mapping[int, ResultReport] = field(default_factory=dict)
    exited: frozenset[int] = frozenset()
    lost: frozenset[int] = frozenset()
    suspect: Optional[Failure] = None
    """A broken collective, held until SETTLE_S passes or a death explains it."""
    settle_deadline: float = 0.0
    last_progress: Mapping[int, float] = field(default_factory=dict)
    """When each rank last started or finished a step."""
    stepping: frozenset[int] = frozenset()
    """The ranks past their first step (the others are judged by the startup limit)."""


@dataclass(frozen=True)
class Pending:
    """No group started yet."""

    history: History = History()


@dataclass(frozen=True)
class Running:
    """A group runs an attempt."""

    history: History
    attempt: AttemptProgress


@dataclass(frozen=True)
class Stopping:
    """The ranks were asked to stop at an agreed step; killed at `deadline`."""

    history: History
    attempt: AttemptProgress
    reason: str
    deadline: float


@dataclass(frozen=True)
class Restarting:
    """An attempt failed and the policy restarts it; `rebuild` when a whole new group must replace the old."""

    history: History
    failure: Failure
    attempt: AttemptProgress
    """The attempt that failed: the ranks it lost (still noted while restarting) and what its ranks returned."""
    rebuild: bool = False
    decision: str = ""
    """Why it restarts, in words (`restart 2 (1 left)`)."""

    @property
    def replaced(self) -> frozenset[int]:
        """The ranks whose workers are replaced: those lost, and a hung one (its thread cannot be recovered)."""
        hung = self.failure.world_rank if self.failure.kind is FailureKind.HANG else None
        return self.attempt.lost | ({hung} if hung is not None else set())

    @property
    def announcement(self) -> str:
        """What the console says on entering this state."""
        return f"{self.failure.summary}; {self.decision} from step {self.history.checkpoint_step}"


@dataclass(frozen=True)
class Done:
    """The job has its outcome."""

    history: History
    outcome: JobOutcome


State = Union[Pending, Running, Stopping, Restarting, Done]
Live = Union[Running, Stopping]
"""The states in which a group runs and its reports are routed."""
_Following = TypeVar("_Following", bound=Union[Running, Stopping, Restarting])


def started(history: History, workers: Sequence[WorkerSpec], now: float) -> Running:
    """A group runs with `workers`: a new attempt, every rank given its startup time from `now`."""
    workers = tuple(workers)
    history = replace(history, attempts=history.attempts + (Attempt(len(history.restarts), workers),))
    return Running(history, AttemptProgress(workers=workers, last_progress={spec.world_rank: now for spec in workers}))


def stopping(state: Running, reason: str, now: float) -> Stopping:
    """The ranks were asked to stop for `reason`; they get STOP_GRACE_S."""
    return Stopping(state.history, state.attempt, reason, now + STOP_GRACE_S)


def ended(
    history: History,
    attempt: AttemptProgress,
    status: str,
    error: Optional[str] = None,
    traceback: str = "",
    result: Optional[ResultReport] = None,
) -> Done:
    """The job ends with `status` in `attempt`."""
    return Done(
        history,
        JobOutcome(
            status=status,
            result=result,
            rank_results=dict(attempt.results),
            workers=attempt.workers,
            attempts=history.attempts,
            error=error,
            traceback=traceback,
            last_checkpoint=history.checkpoint,
            restarts=len(history.restarts),
        ),
    )


def killed(state: State, reason: str, workers: Sequence[WorkerSpec]) -> State:
    """Stop at once: a second stop request, or one when no group runs; a Stopping job keeps its first reason."""
    if isinstance(state, Done):
        return state
    attempt = state.attempt if isinstance(state, (Running, Stopping, Restarting)) else AttemptProgress()
    error = state.reason if isinstance(state, Stopping) else reason
    return ended(state.history, replace(attempt, workers=tuple(workers)), "KILLED", error=error)


def restart_or_fail(
    history: History, attempt: AttemptProgress, failure: Failure, policy: FailureConfig, rebuild: bool = False
) -> Union[Restarting, Done]:
    """Restart after `failure` if the policy allows, else fail the job."""
    decision = decide(failure, len(history.restarts), policy)
    if decision.restart:
        return Restarting(history, failure, attempt, rebuild, decision.reason)
    # say why it was not restarted where restarts were possible
    explain = bool(history.restarts) or policy.max_restarts != 0
    summary = f"{failure.summary} ({decision.reason})" if explain else failure.summary
    return ended(history, attempt, "FAILED", error=summary, traceback=failure.traceback)


def launch_failed(
    history: History, attempt: AttemptProgress, error: LaunchError, policy: FailureConfig
) -> Union[Restarting, Done]:
    """A group that could not be (re)started: rebuilt from scratch if the error allows and the policy does."""
    if not error.retryable:
        return ended(history, attempt, "FAILED", error=str(error))
    # the half-started group is not trusted: a new one replaces it whole
    return restart_or_fail(history, attempt, Failure(FailureKind.LAUNCH, str(error)), policy, rebuild=True)


def on_event(state: State, event: GroupEvent, now: float, settings: ControllerSettings) -> State:
    """What one event of the group makes of `state`."""
    if isinstance(state, Restarting):
        # still note every death: those workers need replacing
        return _attempt(state, lost=state.attempt.lost | {event.world_rank}) if isinstance(event, RankLost) else state
    if not isinstance(state, (Running, Stopping)):
        return state
    if isinstance(event, RankReport):
        return _on_report(state, event.world_rank, event.report, now, settings)
    if isinstance(event, RankLost):
        state = _attempt(state, lost=state.attempt.lost | {event.world_rank})
        return on_failure(
            state,
            Failure(
                FailureKind.WORKER_DIED,
                f"rank {event.world_rank} on {event.node_ip} died: {event.reason}",
                event.world_rank,
                event.node_ip,
            ),
            now,
            settings,
        )
    state = _attempt(state, exited=state.attempt.exited | {event.world_rank})
    return _all_exited(state, now, settings) if len(state.attempt.exited) == len(state.attempt.workers) else state


def on_failure(state: Live, failure: Failure, now: float, settings: ControllerSettings, settled: bool = False) -> State:
    """A failure while a group runs: hold a broken collective briefly, else restart or fail (kill when stopping)."""
    if isinstance(state, Stopping):
        return ended(state.history, state.attempt, "KILLED", error=state.reason)
    if failure.kind is FailureKind.COMMUNICATION and not settled:
        if state.attempt.suspect is not None:
            return state  # more echoes of the same breakage
        # a broken collective is usually the echo of a peer that died: wait briefly for the cause
        return _attempt(state, suspect=failure, settle_deadline=now + SETTLE_S)
    return restart_or_fail(state.history, state.attempt, failure, settings.failure_policy)


def on_deadlines(state: Live, now: float, settings: ControllerSettings) -> State:
    """What the passing of time makes of `state`: a settled suspect, a stop that took too long, a hung rank."""
    suspect = state.attempt.suspect
    if suspect is not None and now >= state.attempt.settle_deadline:
        return on_failure(state, suspect, now, settings, settled=True)  # no death explained it: the collective failed
    if isinstance(state, Stopping):
        if now >= state.deadline:
            return ended(
                state.history,
                state.attempt,
                "KILLED",
                error=f"{state.reason}; ranks did not stop within {STOP_GRACE_S:g} s",
            )
        return state
    hang = _hang(state.attempt, now, settings) if settings.watch_hangs else None
    return on_failure(state, hang, now, settings) if hang is not None else state


def stop_message(reason: str, entrypoint: str) -> str:
    """What the console says when the job starts stopping: how the ranks are asked to stop, per entrypoint."""
    if entrypoint == "script":
        how = f"every rank's script gets SIGTERM and {STOP_GRACE_S:g} s to exit"
    else:
        how = "the ranks finish their current step"
    if reason == USER_STOP:
        return f"stopping: {how} (Ctrl-C again to kill them)"
    return f"stopping: {reason}; {how}"


def _on_report(state: Live, world_rank: int, report: object, now: float, settings: ControllerSettings) -> State:
    if isinstance(report, (StepReport, AttemptStartReport)):
        attempt = state.attempt
        state = _attempt(
            state, last_progress={**attempt.last_progress, world_rank: now}, stepping=attempt.stepping | {world_rank}
        )
    if isinstance(report, CheckpointReport):
        return replace(state, history=replace(state.history, checkpoint=report.path, checkpoint_step=report.step))
    if isinstance(report, ResultReport):
        return _attempt(state, results={**state.attempt.results, world_rank: report})
    if isinstance(report, ErrorReport):
        return on_failure(
            state,
            Failure(
                classify_error(report),
                f"rank {report.world_rank} on {report.node_ip} raised {report.error_type}: {report.message}",
                report.world_rank,
                report.node_ip,
                report.traceback,
            ),
            now,
            settings,
        )
    return state


def _all_exited(state: Live, now: float, settings: ControllerSettings) -> State:
    attempt = state.attempt
    if attempt.suspect is not None:  # every rank left through a broken collective
        return on_failure(state, attempt.suspect, now, settings, settled=True)
    result = attempt.results.get(0)
    digests = {rank: report.params_digest for rank, report in attempt.results.items()}
    if isinstance(state, Stopping):
        return ended(state.history, attempt, "KILLED", error=state.reason, result=result)
    if result is None:
        return ended(state.history, attempt, "FAILED", error="every rank exited but rank 0 sent no result")
    if len(set(digests.values())) > 1:
        differing = sorted(rank for rank, digest in digests.items() if digest != digests[0])
        return ended(
            state.history,
            attempt,
            "FAILED",
            error=f"the ranks ended with different parameters (ranks "
            f"{differing} differ from rank 0): the DDP replicas diverged, so the trained model is not "
            f"trustworthy",
        )
    if result.stopped:  # a stop the ranks saw though none was asked here: reported as the user's
        return ended(state.history, attempt, "KILLED", error=USER_STOP, result=result)
    return ended(state.history, attempt, "FINISHED", result=result)


def _hang(attempt: AttemptProgress, now: float, settings: ControllerSettings) -> Optional[Failure]:
    policy = settings.failure_policy
    for world_rank, seen in sorted(attempt.last_progress.items()):
        started = world_rank in attempt.stepping
        limit = policy.hang_timeout_s if started else settings.startup_limit_s
        if world_rank not in attempt.exited and now - seen > limit:
            spec = attempt.workers[world_rank]
            what = "finished no step for" if started else "finished no first step in"
            setting = (
                f"failure.hang_timeout_s={policy.hang_timeout_s:g}"
                if started or limit == policy.hang_timeout_s
                else f"scaling.rendezvous_timeout_s={limit:g}"
            )
            return Failure(
                FailureKind.HANG,
                f"rank {world_rank} on {spec.node_ip} {what} {now - seen:.0f} s ({setting})",
                world_rank,
                spec.node_ip,
            )
    return None


def _attempt(state: _Following, **changes: Any) -> _Following:
    return replace(state, attempt=replace(state.attempt, **changes))
