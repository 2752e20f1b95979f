"""Which trial may start: the sweep's bookings capped by what was free at its start, and Ray's lagging view."""

from __future__ import annotations

from orchestrator.planning.plan import ClusterSnapshot, JobPlan, NodeSnapshot
from orchestrator.sweep.admission import Admission, free_for_trials


def _cluster(**free_cpus: float) -> ClusterSnapshot:
    return ClusterSnapshot(
        nodes=tuple(
            NodeSnapshot(node_id=name, ip=f"10.0.0.{index}", total={"CPU": 4.0}, available={"CPU": cpus})
            for index, (name, cpus) in enumerate(free_cpus.items())
        )
    )


def _plan(workers: int, cpus: float = 1.0) -> JobPlan:
    return JobPlan(
        world_size=workers,
        backend="gloo",
        strategy="PACK",
        worker_resources={"CPU": cpus},
        torch_threads=1,
        global_batch_size=32,
        bundles=tuple({"CPU": cpus} for _ in range(workers)),
    )


def test_trials_start_while_they_fit_even_before_ray_shows_what_the_first_took():
    admission = Admission(_cluster(a=4.0), max_concurrent=None)
    lagging = _cluster(a=4.0)  # Ray has not subtracted the first trial's placement group yet
    assert admission.admit(0, _plan(2), lagging) is None
    assert admission.admit(1, _plan(2), lagging) is None
    waits = admission.admit(2, _plan(2), lagging)
    assert waits is not None and "cannot be placed" in waits and "CPU: 0" in waits
    admission.release(0)
    assert admission.admit(2, _plan(2), lagging) is None and admission.running == 2


def test_what_others_take_meanwhile_and_what_the_sweep_booked_both_count_as_taken():
    admission = Admission(_cluster(a=4.0, b=2.0), max_concurrent=None)
    assert admission.admit(0, _plan(2), _cluster(a=4.0, b=2.0)) is None
    assert admission.bookings[0] == {"b": {"CPU": 2.0}}  # best fit: the node it fills exactly
    # someone else took 3 CPUs of a; Ray does not show trial 0 on b yet
    now = _cluster(a=1.0, b=2.0)
    assert [
        node.available["CPU"] for node in free_for_trials(admission.baseline, now, [admission.bookings[0]]).nodes
    ] == [1.0, 0.0]
    assert "cannot be placed" in admission.admit(1, _plan(2), now)
    assert admission.admit(2, _plan(1), now) is None and admission.bookings[2] == {"a": {"CPU": 1.0}}
    assert admission.admit(3, _plan(1), _cluster(a=0.0, b=2.0)) is not None  # a: taken per Ray; b: booked


def test_max_concurrent_caps_and_a_lone_trial_that_does_not_fit_still_starts():
    capped = Admission(_cluster(a=4.0), max_concurrent=1)
    assert capped.admit(0, _plan(1), _cluster(a=4.0)) is None
    assert capped.admit(1, _plan(1), _cluster(a=4.0)) == "1 of hydra.launcher.max_concurrent=1 trials are running"
    alone = Admission(_cluster(a=4.0), max_concurrent=None)
    assert alone.admit(0, _plan(8), _cluster(a=4.0)) is None  # its own placement wait decides, as for one job
    assert (
        alone.admit(1, _plan(1), _cluster(a=4.0)) == "trial 0 needs more than was free when it started and runs alone"
    )
    alone.release(0)
    assert alone.admit(1, _plan(1), _cluster(a=4.0)) is None


def test_an_idle_groups_resources_stay_booked_until_a_trial_reuses_it_or_it_is_removed():
    admission = Admission(_cluster(a=4.0), max_concurrent=2)
    lagging = _cluster(a=4.0)
    assert admission.admit(0, _plan(3), lagging) is None
    admission.shelve(0, ("idle", 0))  # trial 0 ended; its group waits for the next trial of its shape
    assert admission.running == 0 and admission.idle[("idle", 0)] == {"a": {"CPU": 3.0}}
    assert admission.admit(1, _plan(2), lagging) is not None  # a new group would not fit beside the idle one
    assert admission.reuse(1, ("idle", 0)) is None  # on the idle group it fits: nothing new is placed
    assert admission.bookings[1] == {"a": {"CPU": 3.0}} and not admission.idle
    admission.shelve(1, ("idle", 1))
    admission.unshelve(("idle", 1))  # removed: what it held is free again
    assert admission.admit(2, _plan(4), lagging) is None


def test_reusing_an_idle_group_still_respects_max_concurrent():
    admission = Admission(_cluster(a=4.0), max_concurrent=1)
    assert admission.admit(0, _plan(1), _cluster(a=4.0)) is None
    assert admission.admit(1, _plan(1), _cluster(a=4.0)) is not None
    admission.shelve(0, ("idle", 0))
    assert admission.admit(2, _plan(1), _cluster(a=4.0)) is None
    assert admission.reuse(3, ("idle", 0)) == "1 of hydra.launcher.max_concurrent=1 trials are running"
    assert ("idle", 0) in admission.idle
