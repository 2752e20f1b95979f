"""The controller with preemptions, resizes and bad nodes: planned stops, their budgets and what is recorded."""

from __future__ import annotations

import io

from orchestrator.cli.console import Console
from orchestrator.config.schema import FailureConfig
from orchestrator.lifecycle.controller import Controller
from orchestrator.lifecycle.rank_reports import CheckpointReport, PreemptionNotice, ResultReport
from orchestrator.lifecycle.states import Restarting, Running, Stopping
from orchestrator.lifecycle.worker_group import CapacityReturned, NodeDraining, RankExited, RankLost, RankReport
from tests.lifecycle.test_controller import FakeClock, FakeGroup, _controller, _results

NO_RESTARTS = FailureConfig(max_restarts=0)


def _checkpoint(step: int) -> list:
    return [RankReport(0, CheckpointReport(step, f"/ckpt/step_{step:09d}"))]


def _results_of(size: int) -> list:
    """Every rank of a `size`-rank attempt returns the same result and exits."""
    reports = [RankReport(rank, ResultReport(world_rank=rank, step=9, params_digest="same")) for rank in range(size)]
    return reports + [RankExited(rank) for rank in range(size)]


def _run_to_restart(controller: Controller) -> Restarting:
    while not isinstance(controller.state, Restarting):
        controller.step()
    return controller.state


def test_a_drained_node_stops_the_ranks_at_a_checkpoint_and_restarts_without_it_uncounted():
    clock = FakeClock()
    group = FakeGroup(
        [_checkpoint(4), [NodeDraining("n0", "10.0.0.1", deadline=60.0)], _results(stopped=True), _results()]
    )
    console = io.StringIO()
    controller, sink = _controller(group, clock, NO_RESTARTS, console=Console(console, interactive=False))
    controller.step(), controller.step(), controller.step()
    assert isinstance(controller.state, Stopping) and controller.state.planned is not None
    assert group.stop_requests == 1
    assert controller.state.deadline == 30.0  # the sooner of the stop grace and the drain's deadline
    restarting = _run_to_restart(controller)
    assert restarting.failure.kind.value == "preempted" and restarting.avoid == frozenset({"n0"})
    outcome = controller.run()
    assert outcome.status == "FINISHED" and outcome.restarts == 1  # though failure.max_restarts=0
    assert group.avoided[-1] == frozenset({"n0"})
    assert sink.tags["restart.1.kind"] == "preempted"
    assert "node 10.0.0.1 is being drained within 60 s" in sink.tags["restart.1.reason"]
    assert "the ranks stop at a checkpoint, then the job continues" in console.getvalue()


def test_preemptions_have_their_own_budget():
    drain = [NodeDraining("n0", "10.0.0.1", deadline=None)]
    group = FakeGroup([drain, _results(stopped=True), drain, _results(stopped=True)])
    policy = FailureConfig(max_restarts=5, max_preemptions=1)
    outcome = _controller(group, FakeClock(), policy)[0].run()
    assert outcome.status == "FAILED" and outcome.restarts == 1
    assert "gave up after 1 preemptions (failure.max_preemptions=1)" in outcome.error


def test_a_drain_of_a_node_the_job_does_not_use_changes_nothing():
    group = FakeGroup([[NodeDraining("other", "10.0.0.9", deadline=5.0)], _results()])
    outcome = _controller(group)[0].run()
    assert outcome.status == "FINISHED" and group.stop_requests == 0 and outcome.restarts == 0


def test_sigterm_on_a_rank_is_a_preemption_of_its_node():
    notice = [RankReport(1, PreemptionNotice(world_rank=1, node_ip="10.0.0.1"))]
    group = FakeGroup([notice, _results(stopped=True), _results()])
    controller, sink = _controller(group, FakeClock(), NO_RESTARTS)
    outcome = controller.run()
    assert outcome.status == "FINISHED" and outcome.restarts == 1
    assert group.avoided[-1] == frozenset({"n0"})
    assert "rank 1 on 10.0.0.1 got SIGTERM" in sink.tags["restart.1.reason"]


def test_a_node_that_goes_before_its_ranks_stopped_still_restarts_uncounted():
    drain = [NodeDraining("n0", "10.0.0.1", deadline=10.0)]
    group = FakeGroup([drain, [RankLost(1, "10.0.0.1", "node died")], _results()])
    outcome = _controller(group, FakeClock(), NO_RESTARTS)[0].run()
    assert outcome.status == "FINISHED" and outcome.restarts == 1
    assert group.restarts[0][0] == {1}  # the lost rank is replaced


def test_ranks_that_miss_the_drain_deadline_are_restarted_from_the_newest_checkpoint():
    clock = FakeClock()
    group = FakeGroup([_checkpoint(6), [NodeDraining("n0", "10.0.0.1", deadline=5.0)], [], [], _results()])
    controller, _ = _controller(group, clock, NO_RESTARTS)
    controller.step(), controller.step(), controller.step()
    assert isinstance(controller.state, Stopping)
    clock.now = 5.0
    restarting = _run_to_restart(controller)
    assert restarting.history.checkpoint_step == 6
    assert controller.run().status == "FINISHED"


def test_returned_capacity_grows_the_job_at_a_checkpoint_and_the_resize_is_recorded():
    group = FakeGroup(
        [_checkpoint(8), [CapacityReturned(workers=3)], _results(stopped=True), _results_of(3)], sizes=[3]
    )
    controller, sink = _controller(group, FakeClock(), NO_RESTARTS)
    outcome = controller.run()
    assert outcome.status == "FINISHED" and outcome.restarts == 1 and len(outcome.workers) == 3
    assert group.stop_requests == 1
    assert {key: sink.tags[key] for key in sink.tags if key.startswith("resize.1.")} == {
        "resize.1.reason": "grow",
        "resize.1.from": "2",
        "resize.1.to": "3",
        "resize.1.step": "8",
        "resize.1.restart": "1",
    }


def test_capacity_for_no_more_workers_than_run_changes_nothing():
    group = FakeGroup([[CapacityReturned(workers=2)], _results()])
    outcome = _controller(group)[0].run()
    assert outcome.status == "FINISHED" and group.stop_requests == 0


def test_a_lost_worker_that_is_not_placed_again_shrinks_the_job_and_is_recorded_as_lost():
    group = FakeGroup([_checkpoint(2), [RankLost(1, "10.0.0.1", "node died")], _results_of(1)], sizes=[1])
    controller, sink = _controller(group, FakeClock(), FailureConfig(max_restarts=1, exclude_node_after=0))
    outcome = controller.run()
    assert outcome.status == "FINISHED" and len(outcome.workers) == 1
    assert sink.tags["resize.1.reason"] == "lost" and sink.tags["resize.1.to"] == "1"
    assert sink.tags["restart.1.workers"] == "2->1"


def test_a_node_whose_ranks_died_twice_is_excluded_from_the_next_attempt():
    death = [RankLost(0, "10.0.0.1", "killed")]
    group = FakeGroup([death, death, _results()])
    console = io.StringIO()
    controller, sink = _controller(
        group, FakeClock(), FailureConfig(max_restarts=3), console=Console(console, interactive=False)
    )
    outcome = controller.run()
    assert outcome.status == "FINISHED" and outcome.restarts == 2
    assert group.avoided == [frozenset(), frozenset(), frozenset({"n0"})]  # the first death only counts
    assert sink.tags["excluded_nodes"] == "10.0.0.1 (n0)" == sink.tags["restart.2.excluded_node"]
    assert "node 10.0.0.1 (n0) is excluded from this job" in console.getvalue()


def test_exclude_node_after_zero_never_excludes():
    death = [RankLost(0, "10.0.0.1", "killed")]
    group = FakeGroup([death, death, death, _results()])
    outcome = _controller(group, FakeClock(), FailureConfig(max_restarts=3, exclude_node_after=0))[0].run()
    assert outcome.status == "FINISHED" and all(avoid == frozenset() for avoid in group.avoided)


def test_a_user_stop_during_a_planned_stop_ends_the_job():
    group = FakeGroup([[NodeDraining("n0", "10.0.0.1", deadline=None)], KeyboardInterrupt()])
    controller, _ = _controller(group, FakeClock(), NO_RESTARTS)
    controller.step(), controller.step()
    assert isinstance(controller.state, Stopping)
    outcome = controller.run()
    assert outcome.status == "KILLED" and outcome.error == "interrupted by the user"
    assert not isinstance(controller.state, Running)
