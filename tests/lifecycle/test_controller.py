"""The controller's state machine, stepped one transition at a time with a scripted fake group."""

from __future__ import annotations

import io

import pytest

from orchestrator.cli.console import Console
from orchestrator.config.schema import FailureConfig
from orchestrator.errors import LaunchError
from orchestrator.lifecycle.controller import (
    SETTLE_S,
    STOP_GRACE_S,
    USER_STOP,
    Controller,
    ControllerSettings,
    ResumePoint,
    StopRequests,
    stop_message,
)
from orchestrator.lifecycle.observers import routing_observers
from orchestrator.lifecycle.rank_reports import (
    AttemptStartReport,
    CheckpointReport,
    ErrorReport,
    MetricsReport,
    ResultReport,
    StepReport,
)
from orchestrator.lifecycle.states import Done, Restarting, Running, Stopping
from orchestrator.lifecycle.worker_group import RankExited, RankLost, RankReport
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.tracking.metrics_sink import InMemorySink
from tests.helpers import worker_spec


def _spec(rank: int) -> WorkerSpec:
    return worker_spec(rank, world_size=2, node_ip="10.0.0.1")


class FakeGroup:
    """Plays back scripted event batches; an exception in the script is raised from wait()."""

    def __init__(self, script, start_error=None, restart_errors=(), sizes=()):
        self.script = list(script)
        self.sizes = list(sizes)
        """World sizes of the attempts after the first (2 when not given): a resize."""
        self.avoided = []
        self.start_error = start_error
        self.restart_errors = list(restart_errors)
        self.restarts = []
        self.attempts = []
        self.stop_requests = 0
        self.shutdowns = 0
        self._specs = []

    @property
    def specs(self):
        return self._specs

    def start(self, resume_from=None, attempt=0, avoid=frozenset()):
        self.started_from = resume_from
        self.attempts.append(attempt)
        self.avoided.append(avoid)
        if self.start_error:
            raise self.start_error
        self._specs = [_spec(0), _spec(1)]

    def restart(self, lost_ranks, resume_from, attempt, avoid=frozenset()):
        self.restarts.append((set(lost_ranks), resume_from))
        self.attempts.append(attempt)
        self.avoided.append(avoid)
        if self.restart_errors:
            raise self.restart_errors.pop(0)
        size = self.sizes.pop(0) if self.sizes else 2
        self._specs = [worker_spec(rank, world_size=size, node_ip="10.0.0.1") for rank in range(size)]
        return {"teardown": 0.5, "placement_and_start": 1.5}

    def wait(self, timeout_s):
        item = self.script.pop(0) if self.script else []
        if isinstance(item, BaseException):
            raise item
        return item

    def request_stop(self):
        self.stop_requests += 1

    def shutdown(self):
        self.shutdowns += 1


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _controller(
    groups,
    clock=None,
    policy=FailureConfig(max_restarts=0),
    *,
    observers=(),
    console=None,
    entrypoint="builtin",
    startup_timeout_s=None,
    resume=ResumePoint(),
    **options,
):
    """A controller taking its groups from `groups` (one FakeGroup, or a list for rebuilds), with the reports
    routed as the job runner routes them: into an in-memory sink and the console."""
    remaining = list(groups) if isinstance(groups, list) else [groups]
    sink, clock = InMemorySink(), clock or FakeClock()
    console = console or Console(io.StringIO(), interactive=False)
    settings = ControllerSettings(failure_policy=policy, entrypoint=entrypoint, startup_timeout_s=startup_timeout_s)
    controller = Controller(
        lambda: remaining.pop(0),
        console,
        [*observers, *routing_observers(sink, console, entrypoint, clock)],
        settings,
        resume,
        clock=clock,
        wall_clock=lambda: 1_800_000_000.25,
        **options,
    )
    return controller, sink


def _results(stopped=False, digest1="same"):
    return [
        RankReport(0, ResultReport(world_rank=0, step=3, stopped=stopped, params_digest="same")),
        RankReport(1, ResultReport(world_rank=1, step=3, stopped=stopped, params_digest=digest1)),
        RankExited(0),
        RankExited(1),
    ]


def test_reports_are_routed_and_a_clean_end_is_finished():
    group = FakeGroup(
        [
            [RankReport(0, StepReport(0, 1, 3, 0, 0.1, 1)), RankReport(0, MetricsReport(1, {"train/loss": 2.0}))],
            [RankReport(0, CheckpointReport(3, "/ckpt/step_000000003.pt"))],
            _results(),
        ]
    )
    controller, sink = _controller(group)
    assert isinstance(controller.step(), Running)
    controller.step()
    assert sink.series("train/loss") == [(1, 2.0)]
    outcome = controller.run()
    assert outcome.status == "FINISHED" and outcome.result.step == 3
    assert outcome.last_checkpoint == "/ckpt/step_000000003.pt"
    assert group.shutdowns == 1


def test_a_user_exception_fails_the_job_with_rank_node_and_traceback():
    error = ErrorReport(
        world_rank=1,
        node_ip="10.0.0.1",
        error_type="ValueError",
        message="bad batch",
        traceback="Traceback ...\nValueError: bad batch",
    )
    outcome = _controller(FakeGroup([[RankReport(1, error)]]))[0].run()
    assert outcome.status == "FAILED"
    assert outcome.error == "rank 1 on 10.0.0.1 raised ValueError: bad batch"
    assert "Traceback" in outcome.traceback


def test_a_dead_rank_fails_the_job_and_the_group_is_released():
    group = FakeGroup([[RankLost(0, "10.0.0.1", "The actor died unexpectedly")]])
    outcome = _controller(group)[0].run()
    assert outcome.status == "FAILED" and "rank 0 on 10.0.0.1 died" in outcome.error
    assert group.shutdowns == 1


def test_ranks_that_disagree_on_their_parameters_fail_the_job():
    outcome = _controller(FakeGroup([_results(digest1="other")]))[0].run()
    assert outcome.status == "FAILED" and "ranks [1] differ from rank 0" in outcome.error


def test_a_failed_start_is_a_failed_job_and_still_releases_what_it_took():
    group = FakeGroup([], start_error=LaunchError("the placement group was not placed"))
    outcome = _controller(group)[0].run()
    assert outcome.status == "FAILED" and "not placed" in outcome.error and group.shutdowns == 1


def test_ctrl_c_asks_ranks_to_stop_and_a_clean_stop_is_killed():
    group = FakeGroup([KeyboardInterrupt(), _results(stopped=True)])
    controller, _ = _controller(group)
    outcome = controller.run()
    assert group.stop_requests == 1
    assert outcome.status == "KILLED" and outcome.result.stopped


def test_a_second_ctrl_c_kills_at_once():
    group = FakeGroup([KeyboardInterrupt(), KeyboardInterrupt()])
    outcome = _controller(group)[0].run()
    assert outcome.status == "KILLED" and group.shutdowns == 1


def test_ranks_that_ignore_a_stop_are_killed_after_the_grace_period():
    clock = FakeClock()
    group = FakeGroup([])
    controller, _ = _controller(group, clock)
    controller.step()
    assert isinstance(controller.interrupt(), Stopping)
    assert isinstance(controller.step(), Stopping)
    clock.now += STOP_GRACE_S
    assert isinstance(controller.step(), Done) and controller.outcome.status == "KILLED"


class StoppingObserver:
    """Asks for a stop when the first metrics arrive, as a sweep's early-stopping rule does."""

    def __init__(self, requests):
        self.requests = requests

    def group_started(self, specs):
        pass

    def report(self, world_rank, report):
        if isinstance(report, MetricsReport):
            self.requests.request("stopped early: worse than the median")

    def job_ended(self, outcome):
        pass


def test_a_stop_request_stops_the_ranks_and_its_reason_is_the_killed_runs_error():
    requests = StopRequests()
    group = FakeGroup([[RankReport(0, MetricsReport(1, {"eval/accuracy": 0.1}))], [], _results(stopped=True)])
    controller, _ = _controller(group, observers=[StoppingObserver(requests)], stop_requests=requests)
    controller.step()
    controller.step()
    assert group.stop_requests == 0  # taken between steps, never in the middle of one
    outcome = controller.run()
    assert group.stop_requests == 1
    assert outcome.status == "KILLED" and outcome.error == "stopped early: worse than the median"
    assert outcome.result.stopped and group.shutdowns == 1


def test_a_second_stop_request_ends_the_job_at_once_and_one_before_the_start_never_starts_it():
    requests = StopRequests()
    group = FakeGroup([[], [], []])
    controller, _ = _controller(group, stop_requests=requests)
    controller.step()
    requests.request("the sweep was interrupted")
    requests.request("the sweep was interrupted")
    outcome = controller.run()
    assert outcome.status == "KILLED" and outcome.error == "the sweep was interrupted" and group.stop_requests == 1
    unstarted = FakeGroup([])
    early = StopRequests()
    early.request("the sweep was interrupted")
    outcome = _controller(unstarted, stop_requests=early)[0].run()
    assert outcome.status == "KILLED" and unstarted.specs == [] and unstarted.shutdowns == 0


class RecordingObserver:
    def __init__(self):
        self.calls = []

    def group_started(self, specs):
        self.calls.append(("started", [spec.world_rank for spec in specs]))

    def report(self, world_rank, report):
        self.calls.append(("report", world_rank, type(report).__name__))

    def job_ended(self, outcome):
        self.calls.append(("ended", outcome.status))


def test_observers_see_the_group_every_report_and_the_end_even_on_failure():
    observer = RecordingObserver()
    group = FakeGroup([[RankReport(1, StepReport(1, 1, 3, 0, 0.2, 1))], [RankLost(0, "10.0.0.1", "gone")]])
    controller, _ = _controller(group, observers=[observer])
    assert controller.run().status == "FAILED"
    assert observer.calls == [("started", [0, 1]), ("report", 1, "StepReport"), ("ended", "FAILED")]


CHECKPOINT = RankReport(0, CheckpointReport(20, "/ckpt/run/step_000000020.pt"))
GLOO_ERROR = ErrorReport(
    world_rank=0,
    node_ip="10.0.0.1",
    error_type="RuntimeError",
    message="[gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.0.0.1]:4711",
    traceback="",
)


def test_a_dead_worker_is_replaced_and_the_job_resumes_from_the_last_checkpoint():
    group = FakeGroup(
        [
            [CHECKPOINT],
            [RankLost(1, "10.0.0.1", "killed")],
            [RankReport(0, AttemptStartReport(0, 20, {"process_group": 0.2, "first_step": 0.1}, 1e9))],
            _results(),
        ]
    )
    controller, sink = _controller(group, policy=FailureConfig(max_restarts=2))
    outcome = controller.run()
    assert outcome.status == "FINISHED" and outcome.restarts == 1
    assert group.restarts == [({1}, "/ckpt/run/step_000000020.pt")]
    assert sink.series("restarts") == [(20, 1.0)]
    assert sink.tags["restart.1.rank"] == "1" and sink.tags["restart.1.kind"] == "worker died"
    assert sink.tags["restart.1.resumed_from_step"] == "20" and sink.tags["restart.1.teardown"] == "0.500"
    assert sink.tags["restart.1.process_group_s"] == "0.200" and "restart.1.to_first_step_s" in sink.tags
    assert sink.tags["restart.1.began_at"] == "1800000000.250"  # wall clock: comparable with the killer's time
    assert sink.checkpoints == [(20, "/ckpt/run/step_000000020.pt")]


def test_when_the_budget_is_spent_the_job_fails_with_the_last_error():
    group = FakeGroup([[RankLost(1, "10.0.0.1", "killed")], [RankLost(0, "10.0.0.1", "oom")]])
    outcome = _controller(group, policy=FailureConfig(max_restarts=1))[0].run()
    assert outcome.status == "FAILED" and len(group.restarts) == 1
    assert outcome.error == "rank 0 on 10.0.0.1 died: oom (gave up after 1 restarts (failure.max_restarts=1))"


def test_infra_only_fails_on_an_exception_in_user_code():
    error = ErrorReport(world_rank=0, node_ip="10.0.0.1", error_type="ValueError", message="bad", traceback="tb")
    group = FakeGroup([[RankReport(0, error)]])
    outcome = _controller(group, policy=FailureConfig(max_restarts=3, restart_on="infra_only"))[0].run()
    assert outcome.status == "FAILED" and group.restarts == [] and "raised ValueError: bad" in outcome.error


def _script_exit(world_rank: int, exit_code: int, tail: str = "") -> RankReport:
    message = (
        f"train.py exited with code {exit_code}" if exit_code > 0 else f"train.py was killed (signal {-exit_code})"
    )
    return RankReport(
        world_rank,
        ErrorReport(
            world_rank=world_rank,
            node_ip="10.0.0.1",
            error_type="ScriptFailed",
            message=message,
            traceback=tail,
            exit_code=exit_code,
        ),
    )


def test_a_script_that_exits_with_an_error_fails_at_once_and_says_why_it_was_not_restarted():
    group = FakeGroup([[_script_exit(0, 2, "usage: train.py [-h] [--lr LR]\ntrain.py: error: argument --lr\n")]])
    outcome = _controller(group, policy=FailureConfig(max_restarts=3))[0].run()
    assert outcome.status == "FAILED" and group.restarts == [] and outcome.restarts == 0
    assert outcome.error.startswith("rank 0 on 10.0.0.1 raised ScriptFailed: train.py exited with code 2 (")
    assert "failure.retry_script_errors=true" in outcome.error and "usage: train.py" in outcome.traceback


def test_a_script_killed_by_a_signal_is_restarted_and_each_attempt_is_numbered():
    group = FakeGroup([[_script_exit(1, -9)], _results()])
    outcome = _controller(group, policy=FailureConfig(max_restarts=1, restart_on="infra_only"))[0].run()
    assert outcome.status == "FINISHED" and group.restarts == [(set(), None)]
    assert group.attempts == [0, 1]  # what the ranks see as TORCHELASTIC_RESTART_COUNT


def test_a_rebuilt_group_keeps_counting_attempts():
    first = FakeGroup([[RankLost(1, "10.0.0.1", "killed")]], restart_errors=[LaunchError("no node", retryable=True)])
    second = FakeGroup([_results()])
    controller, _ = _controller([first, second], policy=FailureConfig(max_restarts=3))
    assert controller.run().status == "FINISHED"
    assert first.attempts == [0, 1] and second.attempts == [2]


def test_the_stop_message_says_how_each_entrypoint_stops():
    assert (
        stop_message(USER_STOP, "builtin")
        == "stopping: the ranks finish their current step (Ctrl-C again to kill them)"
    )
    assert (
        stop_message(USER_STOP, "script")
        == f"stopping: every rank's script gets SIGTERM and {STOP_GRACE_S:g} s to exit (Ctrl-C again to kill them)"
    )
    assert (
        stop_message("stopped early", "script")
        == f"stopping: stopped early; every rank's script gets SIGTERM and {STOP_GRACE_S:g} s to exit"
    )
    printed = io.StringIO()
    controller, _ = _controller(
        FakeGroup([KeyboardInterrupt(), _results(stopped=True)]),
        console=Console(printed, interactive=False),
        entrypoint="script",
    )
    assert controller.run().status == "KILLED"
    assert stop_message(USER_STOP, "script") in printed.getvalue() and "current step" not in printed.getvalue()


def test_a_broken_collective_waits_for_the_death_that_caused_it():
    clock = FakeClock()
    group = FakeGroup([[RankReport(0, GLOO_ERROR)], [RankLost(1, "10.0.0.2", "killed")], _results()])
    controller, sink = _controller(group, clock, FailureConfig(max_restarts=1, restart_on="infra_only"))
    controller.step()
    assert isinstance(controller.step(), Running)  # settling: the gloo error alone is not the cause
    assert isinstance(controller.step(), Restarting) and sink.tags == {}
    assert controller.run().status == "FINISHED"
    assert sink.tags["restart.1.kind"] == "worker died" and sink.tags["restart.1.rank"] == "1"


def test_a_broken_collective_with_no_death_is_retried_as_infrastructure_after_settling():
    clock = FakeClock()
    group = FakeGroup([[RankReport(0, GLOO_ERROR)]])
    controller, sink = _controller(group, clock, FailureConfig(max_restarts=1, restart_on="infra_only"))
    controller.step()
    controller.step()
    clock.now += SETTLE_S
    state = controller.step()
    assert isinstance(state, Restarting) and state.failure.kind.value == "communication"


def test_a_rank_that_makes_no_progress_is_treated_as_hung_and_replaced():
    clock = FakeClock()
    group = FakeGroup([])
    controller, sink = _controller(group, clock, FailureConfig(max_restarts=1, hang_timeout_s=60))
    controller.step()
    group.script.append(
        [RankReport(0, StepReport(0, 5, 100, 0, 0.1, 5)), RankReport(1, StepReport(1, 5, 100, 0, 0.1, 5))]
    )
    assert isinstance(controller.step(), Running)
    clock.now += 61
    group.script.append([RankReport(0, StepReport(0, 6, 100, 0, 0.1, 1))])
    state = controller.step()
    assert isinstance(state, Restarting) and "rank 1 on 10.0.0.1 finished no step for 61 s" in state.failure.summary
    assert isinstance(controller.step(), Running) and group.restarts == [({1}, None)]


def test_an_attempts_start_is_judged_by_the_rendezvous_timeout_not_the_hang_timeout():
    # a replacement process imports torch, joins the rendezvous and loads the checkpoint before its first step:
    # on a busy machine that takes longer than a short hang timeout, and is no hang
    clock = FakeClock()
    group = FakeGroup([])
    controller, _ = _controller(group, clock, FailureConfig(max_restarts=1, hang_timeout_s=10), startup_timeout_s=60)
    controller.step()
    clock.now += 30
    group.script.append([RankReport(0, StepReport(0, 1, 100, 0, 0.1, 1))])
    assert isinstance(controller.step(), Running)  # rank 1 is still starting: within its 60 s
    clock.now += 11
    state = controller.step()
    assert isinstance(state, Restarting)
    assert "rank 0 on 10.0.0.1 finished no step for 11 s (failure.hang_timeout_s=10)" in state.failure.summary


def test_a_restart_that_cannot_be_placed_fails_the_job():
    group = FakeGroup([[RankLost(1, "10.0.0.1", "node lost")]], restart_errors=[LaunchError("not placed in 60 s")])
    outcome = _controller(group, policy=FailureConfig(max_restarts=3))[0].run()
    assert outcome.status == "FAILED" and "restart 1 failed: not placed in 60 s" in outcome.error


def test_a_failed_partial_restart_falls_back_to_a_whole_new_group():
    first = FakeGroup(
        [[RankLost(1, "10.0.0.1", "killed")]],
        restart_errors=[LaunchError("rank 0 died while the group was starting", retryable=True)],
    )
    second = FakeGroup([_results()])
    controller, _ = _controller([first, second], policy=FailureConfig(max_restarts=3))
    outcome = controller.run()
    assert outcome.status == "FINISHED" and outcome.restarts == 2
    assert first.shutdowns == 1 and second.started_from is None and second.shutdowns == 1


def test_a_worker_that_dies_while_the_first_group_starts_is_retried():
    first = FakeGroup([], start_error=LaunchError("rank 1 died while the group was starting", retryable=True))
    second = FakeGroup([_results()])
    controller, _ = _controller([first, second], policy=FailureConfig(max_restarts=1))
    assert controller.run().status == "FINISHED" and first.shutdowns == 1


def test_a_resumed_job_starts_from_its_checkpoint():
    group = FakeGroup([_results()])
    controller, _ = _controller(group, resume=ResumePoint("/ckpt/run/step_000000040.pt", 40))
    assert controller.run().status == "FINISHED" and group.started_from == "/ckpt/run/step_000000040.pt"


def test_a_restart_takes_the_newest_checkpoint_on_disk_even_if_its_report_is_still_in_flight():
    group = FakeGroup([[CHECKPOINT], [RankLost(1, "10.0.0.1", "killed")], _results()])
    controller, _ = _controller(
        group, policy=FailureConfig(max_restarts=1), find_checkpoint=lambda: ("/ckpt/run/step_000000030.pt", 30)
    )
    assert controller.run().status == "FINISHED"
    assert group.restarts == [({1}, "/ckpt/run/step_000000030.pt")]


def test_a_restart_is_announced_once_with_the_step_it_resumes_from():
    printed = io.StringIO()
    group = FakeGroup(
        [[CHECKPOINT], [RankLost(1, "10.0.0.1", "killed"), RankLost(0, "10.0.0.1", "killed")], _results()]
    )
    controller, _ = _controller(
        group, policy=FailureConfig(max_restarts=2), console=Console(printed, interactive=False)
    )
    assert controller.run().status == "FINISHED"
    assert printed.getvalue().count("; restart") == 1
    assert "rank 1 on 10.0.0.1 died: killed; restart 1 (1 left) from step 20\n" in printed.getvalue()
    assert group.restarts == [({0, 1}, "/ckpt/run/step_000000020.pt")]  # a death while restarting is replaced too


class FailingAtTheEnd(RecordingObserver):
    def job_ended(self, outcome):
        raise RuntimeError("the monitor could not stop")


def test_the_group_is_shut_down_even_if_an_observer_fails_at_the_end():
    group = FakeGroup([_results()])
    controller, _ = _controller(group, observers=[FailingAtTheEnd()])
    with pytest.raises(RuntimeError, match="could not stop"):
        controller.run()
    assert controller.outcome.status == "FINISHED" and group.shutdowns == 1
