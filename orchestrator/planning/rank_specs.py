"""Pure rank assignment: placed bundles -> one WorkerSpec per rank, with torchrun's environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from orchestrator.planning.plan import JobPlan

MASTER_PORT_UNKNOWN = 0
"""Placeholder port for dry runs: the real one is found free on rank 0's node at start."""


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
    cuda_device: Optional[int] = None
    """Index of this rank's GPU within its CUDA_VISIBLE_DEVICES; None for CPU workers."""
    pid: Optional[int] = None
    """The worker process the rank runs in (None in dry runs)."""


@dataclass(frozen=True)
class AttemptSpec:
    """Which run and which attempt of it a group of ranks is: what torchrun's elastic agent tells each rank."""

    run_id: str
    """The job's name on Ray (its placement group's, `orchestrator.ray_name` on the MLflow run)."""
    restart_count: int
    """Restarts before this attempt: 0 for the first one."""
    max_restarts: int
    """failure.max_restarts (-1: no limit)."""


def rank_order(placed: Sequence[PlacedBundle]) -> list[PlacedBundle]:
    """Bundles in rank order: contiguous per node, nodes ordered by their lowest bundle index."""
    first_index: dict[str, int] = {}
    for bundle in sorted(placed, key=lambda b: b.bundle_index):
        first_index.setdefault(bundle.node_id, bundle.bundle_index)
    return sorted(placed, key=lambda b: (first_index[b.node_id], b.bundle_index))


def rank_slots(plan: JobPlan, placed: Sequence[PlacedBundle]) -> list[PlacedBundle]:
    """One entry per rank, in rank order: each bundle holds `workers_per_bundle` consecutive ranks."""
    slots = [bundle for bundle in rank_order(placed) for _ in range(plan.workers_per_bundle)]
    if len(slots) != plan.world_size:
        raise ValueError(f"{len(placed)} placed bundles hold {len(slots)} workers, the world is {plan.world_size}")
    return slots


def worker_specs(
    plan: JobPlan,
    placed: Sequence[PlacedBundle],
    master_port: int,
    gpu_ids: Optional[Sequence[Sequence[str]]] = None,
    pids: Optional[Sequence[int]] = None,
    attempt: Optional[AttemptSpec] = None,
) -> list[WorkerSpec]:
    """One spec per rank; MASTER_ADDR is rank 0's node, `master_port` was found free there.

    With `attempt` every rank also gets torchrun's TORCHELASTIC_RUN_ID, TORCHELASTIC_RESTART_COUNT and
    TORCHELASTIC_MAX_RESTARTS (a dry run has no attempt yet).

    `gpu_ids[r]` are the GPU ids Ray assigned to rank r. Every rank on a node then sees all of the
    job's GPUs on that node, in local-rank order, so `cuda:LOCAL_RANK` is its own GPU exactly as
    under torchrun (Ray alone would show each worker only its own GPU as cuda:0).
    """
    slots = rank_slots(plan, placed)
    node_ids = list(dict.fromkeys(slot.node_id for slot in slots))
    ranks_of = {node: [rank for rank, slot in enumerate(slots) if slot.node_id == node] for node in node_ids}
    specs = []
    for world_rank, slot in enumerate(slots):
        local_ranks = ranks_of[slot.node_id]
        env = _torchrun_env(
            plan, world_rank, local_ranks, node_ids.index(slot.node_id), len(node_ids), slots[0].node_ip, master_port
        )
        if attempt is not None:
            env.update(_elastic_env(attempt))
        cuda_device = None
        if gpu_ids is not None:
            visible = list(dict.fromkeys(gpu for rank in local_ranks for gpu in gpu_ids[rank]))
            env["CUDA_VISIBLE_DEVICES"] = ",".join(visible)
            cuda_device = visible.index(gpu_ids[world_rank][0])
        specs.append(
            WorkerSpec(
                world_rank=world_rank,
                local_rank=local_ranks.index(world_rank),
                node_rank=node_ids.index(slot.node_id),
                world_size=plan.world_size,
                local_world_size=len(local_ranks),
                bundle_index=slot.bundle_index,
                node_id=slot.node_id,
                node_ip=slot.node_ip,
                backend=plan.backend,
                torch_threads=plan.torch_threads,
                env=env,
                cuda_device=cuda_device,
                pid=pids[world_rank] if pids is not None else None,
            )
        )
    return specs


def _torchrun_env(
    plan: JobPlan,
    world_rank: int,
    local_ranks: list[int],
    node_rank: int,
    num_nodes: int,
    master_addr: str,
    master_port: int,
) -> dict[str, str]:
    # values of any kind (the NCCL settings, ranks and sizes) until the one str() at the end
    env: dict[str, object] = dict(plan.nccl_env)
    env.update(
        {
            "RANK": world_rank,
            "WORLD_SIZE": plan.world_size,
            "LOCAL_RANK": local_ranks.index(world_rank),
            "LOCAL_WORLD_SIZE": len(local_ranks),
            "GROUP_RANK": node_rank,
            "GROUP_WORLD_SIZE": num_nodes,
            "ROLE_RANK": world_rank,
            "ROLE_WORLD_SIZE": plan.world_size,
            "MASTER_ADDR": master_addr,
            "MASTER_PORT": master_port,
            "OMP_NUM_THREADS": plan.torch_threads,
        }
    )
    return {key: str(value) for key, value in env.items()}


def _elastic_env(attempt: AttemptSpec) -> dict[str, str]:
    return {
        "TORCHELASTIC_RUN_ID": attempt.run_id,
        "TORCHELASTIC_RESTART_COUNT": str(attempt.restart_count),
        "TORCHELASTIC_MAX_RESTARTS": str(attempt.max_restarts),
    }
