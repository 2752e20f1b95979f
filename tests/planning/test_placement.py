"""The preflight placement model: where bundles land now, and why some cannot."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

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


def _spread_one_node_at_a_time(plan: JobPlan, cluster: ClusterSnapshot) -> list:
    """SPREAD and STRICT_SPREAD as first written (every node looked at for every bundle): the reference."""
    free = {node.node_id: dict(node.available) for node in cluster.nodes}
    order = [node.node_id for node in cluster.nodes]

    def best(candidates, bundle):
        fitting = [node for node in candidates if all(free[node].get(k, 0.0) + 1e-9 >= v for k, v in bundle.items())]
        return min(fitting, key=lambda n: sum(free[n].get(k, 0.0) - v for k, v in bundle.items())) if fitting else None

    nodes: list = []
    for bundle in plan.bundles:
        node = best([node for node in order if node not in nodes], bundle)
        if node is None and plan.strategy == "SPREAD":
            node = best(sorted(order, key=nodes.count), bundle)
        if node is not None:
            for name, amount in bundle.items():
                free[node][name] = free[node].get(name, 0.0) - amount
        nodes.append(node)
    return nodes


@pytest.mark.parametrize("strategy", ["SPREAD", "STRICT_SPREAD"])
def test_spread_places_like_looking_at_every_node_for_every_bundle(strategy):
    generator = random.Random(strategy)
    for _ in range(200):
        cluster = _cluster(
            **{
                f"n{i}": {"CPU": float(generator.choice([2, 4, 8])), "GPU": float(generator.choice([0, 1, 2, 8]))}
                for i in range(generator.randrange(1, 12))
            }
        )
        shapes = [{"CPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}, {"GPU": 1.0, "CPU": 2.0}, {"CPU": 4.0, "GPU": 8.0}]
        bundles = tuple(generator.choice(shapes) for _ in range(generator.randrange(1, 16)))
        plan = replace(_plan(strategy, len(bundles), bundles[0]), bundles=bundles)
        assert list(predict_placement(plan, cluster).nodes) == _spread_one_node_at_a_time(plan, cluster)


def test_thousands_of_per_node_bundles_take_the_tightest_nodes_first_each_once():
    nodes = {f"n{i:04d}": {"CPU": 96.0 if i % 3 else 64.0, "GPU": 8.0} for i in range(4096)}
    prediction = predict_placement(_plan("STRICT_SPREAD", 3000, {"CPU": 8.0, "GPU": 8.0}), _cluster(**nodes))
    assert prediction.placeable and len(set(prediction.nodes)) == 3000
    tight = [name for name, resources in nodes.items() if resources["CPU"] == 64.0]
    assert list(prediction.nodes[: len(tight)]) == tight  # best fit first, ties in node order
