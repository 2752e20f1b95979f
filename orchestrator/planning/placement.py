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
    for bundle in bundles:
        unused = [node for node in order if node not in nodes]
        node = _best(unused, free, bundle)
        if node is None and not strict:
            node = _best(sorted(order, key=nodes.count), free, bundle)
        if node is not None:
            _take(free[node], bundle)
        nodes.append(node)
    return nodes


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
