"""The controller's state machine, stepped one transition at a time with a scripted fake group."""

from __future__ import annotations

import io

from orchestrator.console import Console
from orchestrator.controller import Controller, Phase, STOP_GRACE_S
from orchestrator.errors import LaunchError
from orchestrator.group import RankExited, RankLost, RankReport
from orchestrator.metrics.sink import InMemorySink
from orchestrator.reports import CheckpointReport, ErrorReport, MetricsReport, ResultReport, StepReport
from orchestrator.rendezvous import WorkerSpec


def _spec(rank: int) -> WorkerSpec:
    return WorkerSpec(world_rank=rank, local_rank=rank, node_rank=0, world_size=2, local_world_size=2,
                      bundle_index=rank, node_id="n0", node_ip="10.0.0.1", backend="gloo", torch_threads=1, env={})


class FakeGroup:
    """Plays back scripted event batches; an exception in the script is raised from wait()."""

    def __init__(self, script, start_error=None):
        self.script = list(script)
        self.start_error = start_error
        self.stop_requests = 0
        self.shutdowns = 0
        self._specs = []

    @property
    def specs(self):
        return self._specs

    def start(self):
        if self.start_error:
            raise self.start_error
        self._specs = [_spec(0), _spec(1)]

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


def _controller(group, clock=None):
    sink = InMemorySink()
    controller = Controller(lambda: group, sink, Console(io.StringIO(), interactive=False), clock or FakeClock())
    return controller, sink


def _results(stopped=False, digest1="same"):
    return [RankReport(0, ResultReport(world_rank=0, step=3, stopped=stopped, params_digest="same")),
            RankReport(1, ResultReport(world_rank=1, step=3, stopped=stopped, params_digest=digest1)),
            RankExited(0), RankExited(1)]


def test_reports_are_routed_and_a_clean_end_is_finished():
    group = FakeGroup([
        [RankReport(0, StepReport(0, 1, 3, 0, 0.1, 1)), RankReport(0, MetricsReport(1, {"train/loss": 2.0}))],
        [RankReport(0, CheckpointReport(3, "/ckpt/step_000000003.pt"))],
        _results(),
    ])
    controller, sink = _controller(group)
    controller.step()
    assert controller.phase is Phase.RUNNING
    controller.step()
    assert sink.series("train/loss") == [(1, 2.0)]
    outcome = controller.run()
    assert outcome.status == "FINISHED" and outcome.result.step == 3
    assert outcome.last_checkpoint == "/ckpt/step_000000003.pt"
    assert group.shutdowns == 1


def test_a_user_exception_fails_the_job_with_rank_node_and_traceback():
    error = ErrorReport(world_rank=1, node_ip="10.0.0.1", error_type="ValueError", message="bad batch",
                        traceback="Traceback ...\nValueError: bad batch")
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
    controller.interrupt()
    assert controller.phase is Phase.STOPPING
    controller.step()
    assert controller.phase is Phase.STOPPING
    clock.now += STOP_GRACE_S
    controller.step()
    assert controller.phase is Phase.DONE and controller.outcome.status == "KILLED"


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
    controller = Controller(lambda: group, InMemorySink(), Console(io.StringIO(), interactive=False), FakeClock(),
                            observers=[observer])
    assert controller.run().status == "FAILED"
    assert observer.calls == [("started", [0, 1]), ("report", 1, "StepReport"), ("ended", "FAILED")]
