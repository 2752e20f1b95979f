"""Pure preflight: where a plan's bundles would land given each node's free resources now.

A model of Ray's four placement-group strategies (best fit, ties broken by node order). Where Ray
has a free choice between equally good nodes its pick can differ from ours; what fits and what does
not is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from orchestrator.planning.plan import ClusterSnapshot, JobPlan, NodeSnapshot, format_resources

EPSILON = 1e-9


@dataclass(frozen=True)
class PlacementPrediction:
    """Bundle index -> node id (None where the bundle cannot be placed now), plus the problems."""

    nodes: tuple[Optional[str], ...]
    problems: tuple[str, ...]

    @property
    def placeable(self) -> bool:
        """True when every bundle fits now."""
        return not self.problems and all(node is not None for node in self.nodes)


def predict_placement(plan: JobPlan, cluster: ClusterSnapshot) -> PlacementPrediction:
    """Where each bundle would go now, and every reason some cannot."""
    problems = _never_fits(plan, cluster)
    free = {node.node_id: dict(node.available) for node in cluster.nodes}
    order = [node.node_id for node in cluster.nodes]
    if plan.strategy == "STRICT_PACK":
        nodes = _strict_pack(plan.bundles, free, order)
    elif plan.strategy in ("STRICT_SPREAD", "SPREAD"):
        nodes = _spread(plan.bundles, free, order, strict=plan.strategy == "STRICT_SPREAD")
    else:
        nodes = _pack(plan.bundles, free, order)
    if not problems and None in nodes:
        problems = [_not_now(plan, cluster, nodes)]
    return PlacementPrediction(nodes=tuple(nodes), problems=tuple(problems))


def _fits(free: Mapping[str, float], bundle: Mapping[str, float]) -> bool:
    return all(free.get(name, 0.0) + EPSILON >= amount for name, amount in bundle.items())


def _take(free: dict[str, float], bundle: Mapping[str, float]) -> None:
    for name, amount in bundle.items():
        free[name] = free.get(name, 0.0) - amount


def _leftover(free: Mapping[str, float], bundle: Mapping[str, float]) -> float:
    # best fit: the node that keeps the least of what the bundle asks for
    return sum(free.get(name, 0.0) - amount for name, amount in bundle.items())


def _best(
    candidates: Sequence[str], free: Mapping[str, Mapping[str, float]], bundle: Mapping[str, float]
) -> Optional[str]:
    fitting = [node for node in candidates if _fits(free[node], bundle)]
    return min(fitting, key=lambda node: _leftover(free[node], bundle)) if fitting else None


def _strict_pack(
    bundles: Sequence[Mapping[str, float]], free: dict[str, dict[str, float]], order: Sequence[str]
) -> list[Optional[str]]:
    total: dict[str, float] = {}
    for bundle in bundles:
        for name, amount in bundle.items():
            total[name] = total.get(name, 0.0) + amount
    node = _best(order, free, total)
    return [node] * len(bundles)


def _pack(
    bundles: Sequence[Mapping[str, float]], free: dict[str, dict[str, float]], order: Sequence[str]
) -> list[Optional[str]]:
    whole = _strict_pack(bundles, free, order)
    if whole and whole[0] is not None:
        return whole
    nodes: list[Optional[str]] = []
    for bundle in bundles:
        used = [node for node in dict.fromkeys(nodes) if node is not None]
        node = _best(used, free, bundle) or _best(order, free, bundle)
        if node is not None:
            _take(free[node], bundle)
        nodes.append(node)
    return nodes


def _spread(
    bundles: Sequence[Mapping[str, float]], free: dict[str, dict[str, float]], order: Sequence[str], strict: bool
) -> list[Optional[str]]:
    nodes: list[Optional[str]] = []
    placed: dict[str, int] = {}  # node -> bundles placed there so far
    unused = _UnusedNodes(free, order)
    for bundle in bundles:
        node = unused.best(bundle, placed)
        if node is None and not strict:
            node = _best(sorted(order, key=lambda name: placed.get(name, 0)), free, bundle)
        if node is not None:
            _take(free[node], bundle)
            placed[node] = placed.get(node, 0) + 1
        nodes.append(node)
    return nodes


class _UnusedNodes:
    """`_best` over the nodes that hold no bundle yet, in O(1) per bundle instead of O(nodes).

    A node's free resources change only when it takes a bundle, and then it is no longer unused: so the
    unused nodes that fit a bundle, best first, stay in that order; a bundle like an earlier one takes the
    first of them still unused.
    """

    def __init__(self, free: Mapping[str, Mapping[str, float]], order: Sequence[str]):
        self.free = free
        self.order = order
        self.ranked: dict[tuple[tuple[str, float], ...], tuple[list[str], list[int]]] = {}

    def best(self, bundle: Mapping[str, float], placed: Mapping[str, int]) -> Optional[str]:
        """What `_best(unused nodes in node order, free, bundle)` picks (None when none fits)."""
        key = tuple(bundle.items())  # in the bundle's order: _leftover's sum is taken in it
        if key not in self.ranked:
            fitting = [node for node in self.order if node not in placed and _fits(self.free[node], bundle)]
            # a stable sort keeps node order among equal fits: min() in _best picks the first of those
            self.ranked[key] = (sorted(fitting, key=lambda node: _leftover(self.free[node], bundle)), [0])
        ranked, cursor = self.ranked[key]
        while cursor[0] < len(ranked) and ranked[cursor[0]] in placed:
            cursor[0] += 1
        return ranked[cursor[0]] if cursor[0] < len(ranked) else None


def _never_fits(plan: JobPlan, cluster: ClusterSnapshot) -> list[str]:
    problems = []
    for name, amount in plan.bundles[0].items() if plan.bundles else ():
        if not any(node.total.get(name, 0.0) > 0 for node in cluster.nodes):
            problems.append(
                f"no node has the resource {name!r} (each bundle asks for {format_resources({name: amount})})"
            )
    if not problems and not any(_fits(node.total, plan.bundles[0]) for node in cluster.nodes):
        problems.append(f"no node is big enough for one bundle {format_resources(plan.bundles[0])}, even when idle")
    if plan.strategy == "STRICT_SPREAD" and len(plan.bundles) > len(cluster.nodes):
        problems.append(f"STRICT_SPREAD needs {len(plan.bundles)} distinct nodes, the cluster has {len(cluster.nodes)}")
    return problems


def _not_now(plan: JobPlan, cluster: ClusterSnapshot, nodes: Sequence[Optional[str]]) -> str:
    missing = sum(node is None for node in nodes)
    return (
        f"{missing} of {len(nodes)} bundles {format_resources(plan.bundles[0])} cannot be placed "
        f"with strategy {plan.strategy} on what is free now: " + free_summary(cluster.nodes)
    )


def free_summary(nodes: Sequence[NodeSnapshot]) -> str:
    """What each node has free now, one `ip (id): {...}` entry per node."""
    return "; ".join(f"{node.ip} ({node.node_id[:8]}): {format_resources(node.available)}" for node in nodes)
