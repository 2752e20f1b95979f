"""Pure dry run for `orchestrator plan`: the bundles, where they would land now, each rank's env."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from orchestrator.planning.placement import PlacementPrediction
from orchestrator.planning.plan import ClusterSnapshot, JobPlan, format_resources
from orchestrator.planning.rank_specs import MASTER_PORT_UNKNOWN, PlacedBundle, WorkerSpec, worker_specs


def predicted_specs(plan: JobPlan, cluster: ClusterSnapshot, prediction: PlacementPrediction) -> list[WorkerSpec]:
    """The rank table the job would get if Ray placed the bundles as predicted (empty if it cannot)."""
    if not prediction.placeable:
        return []
    # placeable: every bundle has a node, so this drops none and keeps the bundle indices
    nodes = [node_id for node_id in prediction.nodes if node_id is not None]
    placed = [
        PlacedBundle(bundle_index=index, node_id=node_id, node_ip=cluster.node(node_id).ip)
        for index, node_id in enumerate(nodes)
    ]
    return worker_specs(plan, placed, MASTER_PORT_UNKNOWN)


def preflight_dict(
    plan: JobPlan, cluster: ClusterSnapshot, prediction: PlacementPrediction, specs: Sequence[WorkerSpec]
) -> dict[str, Any]:
    """The dry run as plain data (the `--json` output)."""
    return {
        "placeable": prediction.placeable,
        "world_size": plan.world_size,
        "backend": plan.backend,
        "strategy": plan.strategy,
        "bundles": [
            {
                "index": index,
                "resources": dict(bundle),
                "node_id": node_id,
                "node_ip": cluster.node(node_id).ip if node_id else None,
            }
            for index, (bundle, node_id) in enumerate(zip(plan.bundles, prediction.nodes))
        ],
        "ranks": [
            {
                "rank": spec.world_rank,
                "node_rank": spec.node_rank,
                "local_rank": spec.local_rank,
                "node_id": spec.node_id,
                "node_ip": spec.node_ip,
                "bundle": spec.bundle_index,
                "env": dict(spec.env),
            }
            for spec in specs
        ],
        "problems": list(prediction.problems),
    }


def render_preflight(
    plan: JobPlan, cluster: ClusterSnapshot, prediction: PlacementPrediction, specs: Sequence[WorkerSpec]
) -> str:
    """The dry run as text: job shape, bundles and their nodes, rank table with env, problems."""
    shape = (
        f"{len(plan.bundles)} nodes x {plan.workers_per_bundle} workers per node"
        if plan.workers_per_bundle > 1
        else "one bundle per worker"
    )
    lines = [
        f"job: {plan.world_size} workers ({shape}), backend {plan.backend}, global batch {plan.global_batch_size}",
        f"placement group: {len(plan.bundles)} bundles of {format_resources(plan.bundles[0])}, "
        f"strategy {plan.strategy}",
    ]
    for index, node_id in enumerate(prediction.nodes):
        lines.append(f"  bundle {index} -> {_node_text(cluster, node_id)}")
    if specs:
        lines.append(
            "ranks (MASTER_PORT is picked free on rank 0's node when the job starts; GPU workers also get "
            "CUDA_VISIBLE_DEVICES from the GPUs Ray assigns):"
        )
        lines += [_rank_text(spec) for spec in specs]
    if prediction.problems:
        lines.append("problems:")
        lines += [f"  - {problem}" for problem in prediction.problems]
    lines.append(f"can be placed now: {'yes' if prediction.placeable else 'no'}")
    return "\n".join(lines)


def _node_text(cluster: ClusterSnapshot, node_id: Optional[str]) -> str:
    if node_id is None:
        return "cannot be placed now"
    node = cluster.node(node_id)
    return f"node {node.ip} ({node.node_id[:12]}), free now {format_resources(node.available)}"


def _rank_text(spec: WorkerSpec) -> str:
    env = " ".join(f"{key}={'<free port>' if key == 'MASTER_PORT' else value}" for key, value in spec.env.items())
    return (
        f"  rank {spec.world_rank}: node {spec.node_rank} {spec.node_ip} ({spec.node_id[:12]}), "
        f"local rank {spec.local_rank} of {spec.local_world_size}, bundle {spec.bundle_index}\n      {env}"
    )
