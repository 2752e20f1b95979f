"""The controller's states and its pure transitions: what is valid in each state, and what an event makes of it.

Each state is a frozen dataclass and a transition returns a new one. Nothing here touches the worker
group, an observer or a clock: the controller does that and passes in what it got (the time, the ranks).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field, replace
from typing import AbstractSet, Any, Callable, Mapping, Optional, Sequence, TypeVar, Union

from orchestrator.config.schema import FailureConfig
from orchestrator.errors import LaunchError
from orchestrator.lifecycle.failure_policy import Failure, FailureKind, classify_error, decide
from orchestrator.lifecycle.rank_progress import RankMap, RankSet, RankTimes
from orchestrator.lifecycle.rank_reports import (
    AttemptStartReport,
    CheckpointReport,
    ErrorReport,
    PreemptionNotice,
    ResultReport,
    StepReport,
)
from orchestrator.lifecycle.worker_group import CapacityReturned, GroupEvent, NodeDraining, RankLost, RankReport
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
    workers_before: int = 0
    """The failed attempt's world size."""
    workers_after: int = 0
    """The new attempt's world size (0 until it started): different from workers_before after a resize."""
    excluded_node: Optional[str] = None
    """The node (its IP) this restart stopped using for the job (failure.exclude_node_after)."""

    @property
    def resized(self) -> bool:
        """Whether the job continued on a different number of workers."""
        return self.workers_after > 0 and self.workers_after != self.workers_before


@dataclass(frozen=True)
class ControllerSettings:
    """How the controller judges the job: its failure policy, whether it watches for hangs, what the ranks run."""

    failure_policy: FailureConfig = FailureConfig(max_restarts=0)
    watch_hangs: bool = True
    startup_timeout_s: Optional[float] = None
    """How long a rank may take to its first step (scaling.rendezvous_timeout_s); never less than a hang."""
    entrypoint: str = "builtin"
    """What the ranks run (builtin or script): says how they stop."""
    preemption_grace_s: float = STOP_GRACE_S
    """Longest time ranks get to reach a checkpoint after a preemption notice without a deadline (a SIGTERM)."""

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
    node_failures: Mapping[str, int] = field(default_factory=dict)
    """Failures of ranks per node id (deaths and hangs), for failure.exclude_node_after."""
    excluded: frozenset[str] = frozenset()
    """Node ids the job no longer uses."""

    def restarts_of(self, kinds: Callable[[FailureKind], bool]) -> int:
        """How many restarts so far followed a failure whose kind `kinds` accepts."""
        return sum(1 for record in self.restarts if kinds(record.failure.kind))

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
    exited: AbstractSet[int] = frozenset()
    """The ranks whose attempt ended (a RankSet once one did: each exit adds one in O(sqrt(ranks)), not O(ranks))."""
    lost: frozenset[int] = frozenset()
    suspect: Optional[Failure] = None
    """A broken collective, held until SETTLE_S passes or a death explains it."""
    settle_deadline: float = 0.0
    last_progress: RankTimes = field(default_factory=RankTimes)
    """When each rank last started or finished a step (a heartbeat makes the next version in O(1))."""
    stepping: RankSet = field(default_factory=RankSet)
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
    planned: Optional[Failure] = None
    """A preemption or a resize: once the ranks stopped (and checkpointed) the job restarts instead of ending."""
    avoid: frozenset[str] = frozenset()
    """Nodes (ids) the planned restart does not use: those being drained."""


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
    avoid: frozenset[str] = frozenset()
    """Nodes (ids) the new attempt does not use: the job's excluded nodes and those being drained."""
    excludes: Optional[str] = None
    """The node (id) this failure made the job exclude (failure.exclude_node_after), if any."""

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


_COPIED_BY_FIELDS = frozenset(
    kind for kind in (AttemptProgress, Running, Stopping) if not hasattr(kind, "__post_init__")
)
"""The states a heartbeat may copy field by field: those without a __post_init__ to run."""

State = Union[Pending, Running, Stopping, Restarting, Done]
Live = Union[Running, Stopping]
"""The states in which a group runs and its reports are routed."""
_Following = TypeVar("_Following", bound=Union[Running, Stopping, Restarting])


def started(history: History, workers: Sequence[WorkerSpec], now: float) -> Running:
    """A group runs with `workers`: a new attempt, every rank given its startup time from `now`."""
    workers = tuple(workers)
    history = replace(history, attempts=history.attempts + (Attempt(len(history.restarts), workers),))
    progress = RankTimes(dict.fromkeys(map(operator.attrgetter("world_rank"), workers), now))
    return Running(history, AttemptProgress(workers=workers, last_progress=progress))


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
    error = state.reason if isinstance(state, Stopping) and state.planned is None else reason
    return ended(state.history, replace(attempt, workers=tuple(workers)), "KILLED", error=error)


def restart_or_fail(
    history: History,
    attempt: AttemptProgress,
    failure: Failure,
    policy: FailureConfig,
    rebuild: bool = False,
    avoid: frozenset[str] = frozenset(),
) -> Union[Restarting, Done]:
    """Restart after `failure` if the policy allows, else fail the job.

    A death or a hang counts against the rank's node; a node that reached failure.exclude_node_after is
    excluded: the new attempt avoids every excluded node (the group places itself anew away from them).
    """
    decision = decide(
        failure,
        history.restarts_of(lambda kind: kind.counts_as_restart),
        policy,
        preemptions_done=history.restarts_of(lambda kind: kind is FailureKind.PREEMPTED),
    )
    if decision.restart:
        history, excludes = _blame_node(history, attempt, failure, policy)
        return Restarting(
            history,
            failure,
            attempt,
            rebuild,
            decision.reason,
            avoid=history.excluded | avoid,
            excludes=excludes,
        )
    # say why it was not restarted where restarts were possible
    explain = bool(history.restarts) or policy.max_restarts != 0
    summary = f"{failure.summary} ({decision.reason})" if explain else failure.summary
    return ended(history, attempt, "FAILED", error=summary, traceback=failure.traceback)


def _blame_node(
    history: History, attempt: AttemptProgress, failure: Failure, policy: FailureConfig
) -> tuple[History, Optional[str]]:
    """The history with the failure counted against its rank's node, and that node's id when it is now excluded."""
    rank = failure.world_rank
    if not failure.kind.blames_node or rank is None or rank >= len(attempt.workers):
        return history, None
    node = attempt.workers[rank].node_id
    failures = {**history.node_failures, node: history.node_failures.get(node, 0) + 1}
    history = replace(history, node_failures=failures)
    limit = policy.exclude_node_after
    if limit == 0 or failures[node] < limit or node in history.excluded:
        return history, None
    return replace(history, excluded=history.excluded | {node}), node


def planned_stop(state: Running, planned: Failure, now: float, deadline: float, avoid: frozenset[str]) -> Stopping:
    """Stop the ranks at an agreed step (they checkpoint there) to restart for a preemption or a resize."""
    return Stopping(state.history, state.attempt, planned.summary, min(deadline, now + STOP_GRACE_S), planned, avoid)


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
    if isinstance(event, RankReport) and isinstance(event.report, PreemptionNotice):
        node = _node_of(state.attempt, event.world_rank)
        what = f"rank {event.world_rank} on {event.report.node_ip} got {event.report.signal} (its node is going away)"
        return _preempt(state, node, what, now + settings.preemption_grace_s, now)
    if isinstance(event, NodeDraining):
        if event.node_id not in {spec.node_id for spec in state.attempt.workers}:
            return state
        notice = "" if event.deadline is None else f" within {max(event.deadline - now, 0.0):.0f} s"
        deadline = event.deadline if event.deadline is not None else now + settings.preemption_grace_s
        return _preempt(state, event.node_id, f"node {event.node_ip} is being drained{notice}", deadline, now)
    if isinstance(event, CapacityReturned):
        if not isinstance(state, Running) or event.workers <= len(state.attempt.workers):
            return state
        grow = Failure(
            FailureKind.RESIZE,
            f"workers can be placed again: growing from {len(state.attempt.workers)} to {event.workers} workers "
            "at a checkpoint",
        )
        return planned_stop(state, grow, now, now + STOP_GRACE_S, frozenset())
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
    exited = state.attempt.exited
    exited = (exited if isinstance(exited, RankSet) else RankSet(exited)).with_rank(event.world_rank)
    state = _progressed(state, exited=exited)
    return _all_exited(state, now, settings) if len(state.attempt.exited) == len(state.attempt.workers) else state


def _preempt(state: Live, node: Optional[str], what: str, deadline: float, now: float) -> State:
    """A node of the job goes away with notice: stop at a checkpoint, then restart without it."""
    avoid = frozenset({node}) if node is not None else frozenset()
    if isinstance(state, Stopping):
        if state.planned is None:  # the user's stop goes on: the job ends anyway
            return state
        planned = state.planned
        if planned.kind is not FailureKind.PREEMPTED:  # a preemption outranks a resize: it has a deadline
            planned = Failure(FailureKind.PREEMPTED, what)
        return replace(state, planned=planned, avoid=state.avoid | avoid, deadline=min(state.deadline, deadline))
    return planned_stop(state, Failure(FailureKind.PREEMPTED, what), now, deadline, avoid)


def _node_of(attempt: AttemptProgress, world_rank: int) -> Optional[str]:
    return attempt.workers[world_rank].node_id if world_rank < len(attempt.workers) else None


def on_heartbeats(state: Live, world_ranks: tuple[int, ...], now: float) -> Live:
    """What the StepReports of these ranks, taken together at `now`, make of a live state: one new state for a
    whole wait's heartbeats instead of one per report (a heartbeat changes nothing but the progress fields)."""
    attempt = state.attempt
    return _progressed(
        state,
        last_progress=attempt.last_progress.with_times(world_ranks, now),
        stepping=attempt.stepping.with_ranks(world_ranks),
    )


def on_failure(state: Live, failure: Failure, now: float, settings: ControllerSettings, settled: bool = False) -> State:
    """A failure while a group runs: hold a broken collective briefly, else restart or fail (kill when stopping).

    During a planned stop (a preemption, a resize) a failure only makes the planned restart come sooner:
    the preempted node may go before its ranks reached the checkpoint.
    """
    if isinstance(state, Stopping):
        if state.planned is not None:
            return _planned_restart(state, settings)
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
        if now >= state.deadline and state.planned is not None:
            return _planned_restart(state, settings)
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
    if isinstance(report, StepReport):
        return _stepped(state, world_rank, now)  # the heartbeat: once per rank and second, so the cheapest path
    if isinstance(report, AttemptStartReport):
        state = _stepped(state, world_rank, now)
    if isinstance(report, CheckpointReport):
        return replace(state, history=replace(state.history, checkpoint=report.path, checkpoint_step=report.step))
    if isinstance(report, ResultReport):  # every rank's, at the end: a copy of all the others' each would be O(ranks)
        results = state.attempt.results
        results = results if isinstance(results, RankMap) else RankMap(results)
        return _progressed(state, results=results.with_value(world_rank, report))
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
    if isinstance(state, Stopping) and state.planned is not None:
        return _planned_restart(state, settings)
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


def _planned_restart(state: Stopping, settings: ControllerSettings) -> State:
    """The ranks stopped (or the deadline passed): restart for the preemption or resize that was planned."""
    assert state.planned is not None
    return restart_or_fail(state.history, state.attempt, state.planned, settings.failure_policy, avoid=state.avoid)


def _hang(attempt: AttemptProgress, now: float, settings: ControllerSettings) -> Optional[Failure]:
    policy = settings.failure_policy
    progress = attempt.last_progress
    # every limit is at least the hang timeout: while the earliest time is within it, no rank is late, and
    # the check costs O(1) instead of a look at every rank
    if now - progress.floor <= policy.hang_timeout_s:
        return None
    hung = _first_hung(attempt, now, settings)
    if hung is None:
        progress.settle_floor()  # the next look at every rank is then a hang timeout away, not one check
    return hung


def _first_hung(attempt: AttemptProgress, now: float, settings: ControllerSettings) -> Optional[Failure]:
    # the lowest rank past its limit (the hang timeout, or the startup limit before its first step)
    policy = settings.failure_policy
    progress = attempt.last_progress
    # no limit is under the hang timeout: the ranks past it are the few to judge, lowest first
    late = sorted(rank for rank, seen in progress.items() if now - seen > policy.hang_timeout_s)
    for world_rank in late:
        seen = progress[world_rank]
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


def _stepped(state: Live, world_rank: int, now: float) -> Live:
    """`state` with `world_rank` past a step at `now`, in O(1): every rank's heartbeat takes this path."""
    attempt = state.attempt
    if type(state) not in _COPIED_BY_FIELDS or type(attempt) not in _COPIED_BY_FIELDS:
        times, stepping = attempt.last_progress.with_time(world_rank, now), attempt.stepping.with_rank(world_rank)
        return _attempt(state, last_progress=times, stepping=stepping)
    # _progressed, written out for the two fields: no keyword dicts on the path of every heartbeat
    progressed = object.__new__(type(attempt))
    fields = progressed.__dict__
    fields.update(attempt.__dict__)
    fields["last_progress"] = attempt.last_progress.with_time(world_rank, now)
    fields["stepping"] = attempt.stepping.with_rank(world_rank)
    following = object.__new__(type(state))
    following.__dict__.update(state.__dict__)
    following.__dict__["attempt"] = progressed
    return following


def _progressed(state: Live, **changes: Any) -> Live:
    """`state` with these changes to its attempt: what _attempt makes, made field by field."""
    attempt = state.attempt
    if type(state) not in _COPIED_BY_FIELDS or type(attempt) not in _COPIED_BY_FIELDS:
        return _attempt(state, **changes)
    # dataclasses.replace through a frozen __init__ sets every field with object.__setattr__: several
    # microseconds a state, two states a heartbeat; these have nothing for __init__ to check
    progressed = object.__new__(type(attempt))
    progressed.__dict__.update(attempt.__dict__, **changes)
    following = object.__new__(type(state))
    following.__dict__.update(state.__dict__, attempt=progressed)
    return following


def _attempt(state: _Following, **changes: Any) -> _Following:
    return replace(state, attempt=replace(state.attempt, **changes))
