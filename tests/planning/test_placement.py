"""The preflight placement model: where bundles land now, and why some cannot."""

from __future__ import annotations

from orchestrator.planning.placement import predict_placement
from orchestrator.planning.plan import ClusterSnapshot, JobPlan, NodeSnapshot


def _cluster(**free_by_node: dict) -> ClusterSnapshot:
    return ClusterSnapshot(
        nodes=tuple(
            NodeSnapshot(node_id=name, ip=f"10.0.0.{i}", total=dict(resources), available=dict(resources))
            for i, (name, resources) in enumerate(free_by_node.items())
        )
    )


def _plan(strategy: str, bundles: int, bundle: dict) -> JobPlan:
    return JobPlan(
        world_size=bundles,
        backend="gloo",
        strategy=strategy,
        worker_resources=bundle,
        torch_threads=1,
        global_batch_size=bundles,
        bundles=(bundle,) * bundles,
    )


def test_pack_fills_one_node_when_it_can_and_prefers_the_tightest_fit():
    cluster = _cluster(big={"CPU": 8.0}, small={"CPU": 2.0})
    assert predict_placement(_plan("PACK", 2, {"CPU": 1.0}), cluster).nodes == ("small", "small")
    assert predict_placement(_plan("PACK", 3, {"CPU": 1.0}), cluster).nodes == ("big",) * 3


def test_pack_spills_over_when_no_node_holds_everything():
    cluster = _cluster(a={"CPU": 2.0}, b={"CPU": 2.0})
    prediction = predict_placement(_plan("PACK", 3, {"CPU": 1.0}), cluster)
    assert prediction.placeable and sorted(prediction.nodes) == ["a", "a", "b"]


def test_strict_spread_uses_distinct_nodes_or_says_it_cannot():
    cluster = _cluster(a={"CPU": 2.0}, b={"CPU": 2.0})
    assert set(predict_placement(_plan("STRICT_SPREAD", 2, {"CPU": 1.0}), cluster).nodes) == {"a", "b"}
    prediction = predict_placement(_plan("STRICT_SPREAD", 3, {"CPU": 1.0}), cluster)
    assert not prediction.placeable
    assert "STRICT_SPREAD needs 3 distinct nodes, the cluster has 2" in prediction.problems[0]


def test_spread_reuses_nodes_when_it_must():
    cluster = _cluster(a={"CPU": 2.0}, b={"CPU": 2.0})
    prediction = predict_placement(_plan("SPREAD", 3, {"CPU": 1.0}), cluster)
    assert prediction.placeable and sorted(prediction.nodes) == ["a", "a", "b"]


def test_strict_pack_needs_one_node_for_everything():
    cluster = _cluster(a={"CPU": 2.0}, b={"CPU": 2.0})
    prediction = predict_placement(_plan("STRICT_PACK", 3, {"CPU": 1.0}), cluster)
    assert prediction.nodes == (None, None, None) and "cannot be placed" in prediction.problems[0]


def test_a_custom_resource_no_node_has_is_named():
    prediction = predict_placement(
        _plan("PACK", 1, {"CPU": 1.0, "accelerator_type:H100": 1.0}), _cluster(a={"CPU": 4.0})
    )
    assert prediction.problems == (
        "no node has the resource 'accelerator_type:H100' (each bundle asks for {accelerator_type:H100: 1})",
    )


def test_busy_nodes_block_now_and_the_message_shows_what_is_free():
    cluster = ClusterSnapshot(nodes=(NodeSnapshot("a", "10.0.0.1", {"CPU": 4.0}, {"CPU": 1.0}),))
    prediction = predict_placement(_plan("PACK", 2, {"CPU": 1.0}), cluster)
    assert not prediction.placeable
    assert (
        "1 of 2 bundles {CPU: 1} cannot be placed with strategy PACK on what is free now: 10.0.0.1 (a): {CPU: 1}"
        == prediction.problems[0]
    )


def test_resources_are_shown_as_users_write_them_without_rays_own_placement_group_resources():
    from orchestrator.planning.plan import format_resources

    free = {
        "CPU": 0.0,
        "memory": 16 * 1024**3,
        "node:10.0.0.1": 1.0,
        "object_store_memory": 1e9,
        "CPU_group_5368d33a648f0f1da228b6aa87290100": 0.0,
        "bundle_group_0_5368d33a648f0f1da228b6aa87290100": 0.0,
        "my_group_x": 2.0,
    }
    assert format_resources(free) == "{CPU: 0, memory: 16.0 GiB, my_group_x: 2}"
