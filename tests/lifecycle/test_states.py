"""The controller's pure transitions: each state on each event, with no group, observer or clock."""

from __future__ import annotations

from dataclasses import replace

from orchestrator.config.schema import FailureConfig
from orchestrator.errors import LaunchError
from orchestrator.lifecycle.failure_policy import Failure, FailureKind
from orchestrator.lifecycle.rank_reports import (
    AttemptStartReport,
    CheckpointReport,
    ErrorReport,
    MetricsReport,
    ResultReport,
    StepReport,
)
from orchestrator.lifecycle.states import (
    SETTLE_S,
    STOP_GRACE_S,
    USER_STOP,
    ControllerSettings,
    Done,
    History,
    Pending,
    Restarting,
    RestartRecord,
    ResumePoint,
    Running,
    killed,
    launch_failed,
    on_deadlines,
    on_event,
    started,
    stopping,
)
from orchestrator.lifecycle.worker_group import RankExited, RankLost, RankReport
from orchestrator.planning.rank_specs import WorkerSpec
from tests.helpers import worker_spec

RESTARTS = ControllerSettings(failure_policy=FailureConfig(max_restarts=2, hang_timeout_s=60))
NO_RESTARTS = ControllerSettings()
GLOO_ERROR = ErrorReport(
    world_rank=0,
    node_ip="10.0.0.1",
    error_type="RuntimeError",
    message="[gloo] Connection closed by peer [10.0.0.2]:4711",
    traceback="",
)


def _spec(rank: int) -> WorkerSpec:
    return worker_spec(rank, world_size=2, node_ip="10.0.0.1")


def _running(now: float = 0.0, history: History = History()) -> Running:
    return started(history, [_spec(0), _spec(1)], now)


def _result(rank: int, digest: str = "same", stopped: bool = False) -> RankReport:
    return RankReport(rank, ResultReport(world_rank=rank, step=3, stopped=stopped, params_digest=digest))


def _events(state, events, now=0.0, settings=NO_RESTARTS):
    for event in events:
        state = on_event(state, event, now, settings)
    return state


def test_a_started_group_is_a_new_attempt_whose_ranks_get_their_startup_time_from_now():
    history = History.resuming(ResumePoint("/ckpt/step_000000040.pt", 40))
    running = _running(5.0, replace(history, restarts=(RestartRecord(1, Failure(FailureKind.HANG, "hung"), 40, 0, 0),)))
    assert [attempt.number for attempt in running.history.attempts] == [1]
    assert running.attempt.last_progress == {0: 5.0, 1: 5.0} and running.attempt.stepping == frozenset()
    assert running.history.checkpoint == "/ckpt/step_000000040.pt" and running.history.checkpoint_step == 40


def test_running_notes_progress_checkpoints_and_results_and_ignores_other_reports():
    state = _events(
        _running(),
        [
            RankReport(1, StepReport(1, 1, 3, 0, 0.1, 1)),
            RankReport(0, AttemptStartReport(0, 0, {}, 1e9)),
            RankReport(0, CheckpointReport(2, "/ckpt/step_000000002.pt")),
            RankReport(0, MetricsReport(2, {"train/loss": 1.0})),
            _result(1),
        ],
        now=7.0,
    )
    assert isinstance(state, Running)
    assert state.attempt.last_progress == {0: 7.0, 1: 7.0} and state.attempt.stepping == {0, 1}
    assert (state.history.checkpoint, state.history.checkpoint_step) == ("/ckpt/step_000000002.pt", 2)
    assert set(state.attempt.results) == {1}


def test_every_rank_exited_ends_the_job_by_what_the_ranks_returned():
    exits = [RankExited(0), RankExited(1)]
    finished = _events(_running(), [_result(0), _result(1), *exits])
    assert isinstance(finished, Done) and finished.outcome.status == "FINISHED"
    assert finished.outcome.result.step == 3 and finished.outcome.attempts == finished.history.attempts
    diverged = _events(_running(), [_result(0), _result(1, "other"), *exits])
    assert diverged.outcome.status == "FAILED" and "ranks [1] differ from rank 0" in diverged.outcome.error
    silent = _events(_running(), [_result(1), *exits])
    assert silent.outcome.error == "every rank exited but rank 0 sent no result"
    stopped = _events(_running(), [_result(0, stopped=True), _result(1, stopped=True), *exits])
    assert stopped.outcome.status == "KILLED" and stopped.outcome.error == USER_STOP
    assert isinstance(_events(_running(), [RankExited(0)]), Running)


def test_a_failure_restarts_while_the_budget_lasts_and_fails_the_job_after():
    lost = RankLost(1, "10.0.0.1", "killed")
    restarting = _events(_running(), [lost], settings=RESTARTS)
    assert isinstance(restarting, Restarting) and restarting.failure.kind is FailureKind.WORKER_DIED
    assert restarting.replaced == {1} and not restarting.rebuild
    assert restarting.announcement == "rank 1 on 10.0.0.1 died: killed; restart 1 (1 left) from step 0"
    failed = _events(_running(), [lost])
    assert isinstance(failed, Done) and failed.outcome.error == "rank 1 on 10.0.0.1 died: killed"


def test_a_broken_collective_settles_before_it_is_decided_on():
    suspect = _events(_running(), [RankReport(0, GLOO_ERROR), RankReport(1, GLOO_ERROR)], now=1.0, settings=RESTARTS)
    assert isinstance(suspect, Running) and suspect.attempt.settle_deadline == 1.0 + SETTLE_S
    assert on_deadlines(suspect, 1.0 + SETTLE_S - 0.1, RESTARTS) is suspect
    settled = on_deadlines(suspect, 1.0 + SETTLE_S, RESTARTS)
    assert isinstance(settled, Restarting) and settled.failure.kind is FailureKind.COMMUNICATION
    explained = on_event(suspect, RankLost(1, "10.0.0.2", "killed"), 2.0, RESTARTS)
    assert isinstance(explained, Restarting) and explained.failure.kind is FailureKind.WORKER_DIED


def test_a_rank_without_a_step_past_its_limit_is_hung_unless_hangs_are_not_watched():
    running = on_event(_running(), RankReport(0, StepReport(0, 1, 3, 0, 0.1, 1)), 0.0, RESTARTS)
    assert on_deadlines(running, 60.0, RESTARTS) is running
    hung = on_deadlines(running, 61.0, RESTARTS)
    assert isinstance(hung, Restarting) and hung.failure.kind is FailureKind.HANG and hung.replaced == {0}
    assert "rank 0 on 10.0.0.1 finished no step for 61 s (failure.hang_timeout_s=60)" == hung.failure.summary
    assert on_deadlines(running, 61.0, replace(RESTARTS, watch_hangs=False)) is running
    slow_start = replace(RESTARTS, startup_timeout_s=120)
    assert isinstance(on_deadlines(_running(), 61.0, slow_start), Running)
    assert "(scaling.rendezvous_timeout_s=120)" in on_deadlines(_running(), 121.0, slow_start).failure.summary


def test_stopping_ends_killed_on_any_failure_on_the_ranks_exit_or_at_its_deadline():
    state = stopping(_running(), "stopped early", 10.0)
    assert state.deadline == 10.0 + STOP_GRACE_S
    failed = on_event(state, RankLost(0, "10.0.0.1", "killed"), 11.0, RESTARTS)
    assert failed.outcome.status == "KILLED" and failed.outcome.error == "stopped early"
    exited = _events(state, [_result(0, stopped=True), _result(1, stopped=True), RankExited(0), RankExited(1)])
    assert exited.outcome.status == "KILLED" and exited.outcome.error == "stopped early" and exited.outcome.result
    assert on_deadlines(state, 10.0 + STOP_GRACE_S - 1, RESTARTS) is state
    late = on_deadlines(state, 10.0 + STOP_GRACE_S, RESTARTS)
    assert late.outcome.error == f"stopped early; ranks did not stop within {STOP_GRACE_S:g} s"


def test_restarting_still_notes_deaths_and_done_takes_nothing():
    restarting = _events(_running(), [RankLost(1, "10.0.0.1", "killed")], settings=RESTARTS)
    later = _events(restarting, [RankLost(0, "10.0.0.1", "killed"), _result(0), RankExited(1)], settings=RESTARTS)
    assert isinstance(later, Restarting) and later.replaced == {0, 1} and later.attempt.results == {}
    done = _events(_running(), [RankLost(1, "10.0.0.1", "killed")])
    assert _events(done, [_result(0), RankLost(0, "10.0.0.1", "x"), RankExited(0)]) is done
    assert on_event(Pending(), RankExited(0), 0.0, RESTARTS) == Pending()


def test_a_group_that_cannot_start_is_rebuilt_if_it_may_be_retried():
    attempt = _running().attempt
    rebuilt = launch_failed(History(), attempt, LaunchError("rank 1 died", retryable=True), RESTARTS.failure_policy)
    assert isinstance(rebuilt, Restarting) and rebuilt.rebuild and rebuilt.failure.kind is FailureKind.LAUNCH
    final = launch_failed(History(), attempt, LaunchError("not placed in 60 s"), RESTARTS.failure_policy)
    assert isinstance(final, Done) and final.outcome.status == "FAILED" and final.outcome.error == "not placed in 60 s"


def test_a_kill_ends_at_once_and_a_stopping_job_keeps_its_first_reason():
    assert killed(Pending(), "the sweep was interrupted", ()).outcome.error == "the sweep was interrupted"
    assert killed(stopping(_running(), "stopped early", 0.0), USER_STOP, ()).outcome.error == "stopped early"
    done = killed(Pending(), USER_STOP, ())
    assert killed(done, "again", ()) is done


def test_a_restart_takes_a_newer_checkpoint_found_on_disk_only():
    history = History(checkpoint="/ckpt/step_000000020.pt", checkpoint_step=20)
    assert history.with_newest(("/ckpt/step_000000030.pt", 30)).checkpoint_step == 30
    assert history.with_newest(("/ckpt/step_000000010.pt", 10)) is history and history.with_newest(None) is history
    record = RestartRecord(1, Failure(FailureKind.HANG, "hung"), 20, 0.0, 0.0)
    timed = history.with_restart(record).with_restart(replace(record, timings={"teardown": 1.0}))
    assert [r.timings for r in timed.restarts] == [{"teardown": 1.0}]


def test_the_lowest_late_rank_is_hung_however_the_ranks_reported_and_whatever_was_looked_at_before():
    ranks = 200
    state = started(History(), [worker_spec(rank, world_size=ranks, node_ip="10.0.0.1") for rank in range(ranks)], 0.0)
    for rank in range(ranks):  # every rank steps at 10 s, ranks 150 and 170 never again
        state = on_event(state, RankReport(rank, StepReport(rank, 1, 9, 0, 0.1, 1)), 10.0, RESTARTS)
    for rank in range(ranks):
        if rank not in (150, 170):
            state = on_event(state, RankReport(rank, StepReport(rank, 2, 9, 0, 0.1, 1)), 40.0, RESTARTS)
    assert on_deadlines(state, 70.0, RESTARTS) is state  # 60 s after 10 s: not yet past the limit
    assert on_deadlines(state, 71.0, RESTARTS).failure.world_rank == 150
    early = on_event(state, RankReport(150, StepReport(150, 2, 9, 0, 0.1, 1)), 5.0, RESTARTS)  # a time out of order
    assert on_deadlines(early, 66.0, RESTARTS).failure.world_rank == 150
    exited = on_event(state, RankExited(150), 60.0, RESTARTS)
    assert on_deadlines(exited, 71.0, RESTARTS).failure.world_rank == 170  # one that exited is never late
    caught_up = on_event(
        on_event(state, RankReport(150, StepReport(150, 2, 9, 0, 0.1, 1)), 60.0, RESTARTS),
        RankReport(170, StepReport(170, 2, 9, 0, 0.1, 1)),
        60.0,
        RESTARTS,
    )
    assert on_deadlines(caught_up, 99.0, RESTARTS) is caught_up  # the earliest is now 40 s
    assert on_deadlines(caught_up, 101.0, RESTARTS).failure.world_rank == 0  # every rank of the 40 s reports
    assert on_deadlines(state, 71.0, RESTARTS).failure.world_rank == 150  # the earlier version is unchanged


def test_a_heartbeat_is_the_state_with_the_ranks_time_and_first_step_noted_and_leaves_the_old_one_as_it_was():
    running = _running(2.0)
    beat = on_event(running, RankReport(1, StepReport(1, 1, 3, 0, 0.1, 1)), 9.0, RESTARTS)
    progress = replace(running.attempt, last_progress={0: 2.0, 1: 9.0}, stepping=frozenset({1}))
    assert isinstance(beat, Running) and beat == replace(running, attempt=progress)
    assert running.attempt.last_progress == {0: 2.0, 1: 2.0} and running.attempt.stepping == frozenset()
    stopping_beat = on_event(
        stopping(running, "stopped early", 3.0), RankReport(0, StepReport(0, 1, 3, 0, 0.1, 1)), 4.0, RESTARTS
    )
    assert stopping_beat.reason == "stopped early" and stopping_beat.attempt.last_progress == {0: 4.0, 1: 2.0}


def test_every_ranks_result_is_kept_and_the_outcome_holds_them_all():
    ranks = 300
    state = started(History(), [worker_spec(rank, world_size=ranks) for rank in range(ranks)], 0.0)
    state = _events(state, [_result(rank) for rank in range(ranks)] + [RankExited(rank) for rank in range(ranks)])
    assert isinstance(state, Done) and state.outcome.status == "FINISHED"
    assert state.outcome.rank_results == {rank: _result(rank).report for rank in range(ranks)}
    assert type(state.outcome.rank_results) is dict
