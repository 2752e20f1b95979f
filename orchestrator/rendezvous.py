"""Pure rank assignment: placed bundles -> one WorkerSpec per rank, with torchrun's environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from orchestrator.plan import JobPlan


@dataclass(frozen=True)
class PlacedBundle:
    """Where the placement group put one bundle."""

    bundle_index: int
    node_id: str
    node_ip: str


@dataclass(frozen=True)
class WorkerSpec:
    """Everything one rank needs to join the group; `env` is what torchrun would have set."""

    world_rank: int
    local_rank: int
    node_rank: int
    world_size: int
    local_world_size: int
    bundle_index: int
    node_id: str
    node_ip: str
    backend: str
    torch_threads: int
    env: Mapping[str, str]


def rank_order(placed: Sequence[PlacedBundle]) -> list[PlacedBundle]:
    """Bundles in rank order: contiguous per node, nodes ordered by their lowest bundle index."""
    first_index: dict[str, int] = {}
    for bundle in sorted(placed, key=lambda b: b.bundle_index):
        first_index.setdefault(bundle.node_id, bundle.bundle_index)
    return sorted(placed, key=lambda b: (first_index[b.node_id], b.bundle_index))


def worker_specs(plan: JobPlan, placed: Sequence[PlacedBundle], master_port: int) -> list[WorkerSpec]:
    """One spec per rank; MASTER_ADDR is rank 0's node, `master_port` was found free there."""
    ordered = rank_order(placed)
    if len(ordered) != plan.world_size:
        raise ValueError(f"{len(ordered)} placed bundles for a world of {plan.world_size}")
    node_ids = list(dict.fromkeys(b.node_id for b in ordered))
    per_node = {node_id: [b for b in ordered if b.node_id == node_id] for node_id in node_ids}
    master_addr = ordered[0].node_ip
    specs = []
    for world_rank, bundle in enumerate(ordered):
        local = per_node[bundle.node_id]
        env = {
            "RANK": world_rank,
            "WORLD_SIZE": plan.world_size,
            "LOCAL_RANK": local.index(bundle),
            "LOCAL_WORLD_SIZE": len(local),
            "GROUP_RANK": node_ids.index(bundle.node_id),
            "GROUP_WORLD_SIZE": len(node_ids),
            "ROLE_RANK": world_rank,
            "ROLE_WORLD_SIZE": plan.world_size,
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": master_port,
            "OMP_NUM_THREADS": plan.torch_threads,
        }
        specs.append(
            WorkerSpec(
                world_rank=world_rank,
                local_rank=local.index(bundle),
                node_rank=node_ids.index(bundle.node_id),
                world_size=plan.world_size,
                local_world_size=len(local),
                bundle_index=bundle.bundle_index,
                node_id=bundle.node_id,
                node_ip=bundle.node_ip,
                backend=plan.backend,
                torch_threads=plan.torch_threads,
                env={key: str(value) for key, value in env.items()},
            )
        )
    return specs
