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
    # every rank's node in one pass (a pass per node, or a list search per rank, is O(nodes x ranks))
    ranks_of: dict[str, list[int]] = {}
    for rank, slot in enumerate(slots):
        ranks_of.setdefault(slot.node_id, []).append(rank)
    node_rank_of = {node: node_rank for node_rank, node in enumerate(ranks_of)}
    local_rank_of = {rank: local for ranks in ranks_of.values() for local, rank in enumerate(ranks)}
    visible_of = {} if gpu_ids is None else {node: _visible(ranks, gpu_ids) for node, ranks in ranks_of.items()}
    job_env = _JobEnv.of(plan, len(ranks_of), slots[0].node_ip, master_port, attempt)
    specs = []
    for world_rank, slot in enumerate(slots):
        local_ranks = ranks_of[slot.node_id]
        node_rank = node_rank_of[slot.node_id]
        local_rank = local_rank_of[world_rank]
        env = job_env.for_rank(world_rank, local_rank, len(local_ranks), node_rank)
        cuda_device = None
        if gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"], index_of = visible_of[slot.node_id]
            cuda_device = index_of[gpu_ids[world_rank][0]]
        specs.append(
            WorkerSpec(
                world_rank=world_rank,
                local_rank=local_rank,
                node_rank=node_rank,
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


def _visible(local_ranks: list[int], gpu_ids: Sequence[Sequence[str]]) -> tuple[str, dict[str, int]]:
    """A node's CUDA_VISIBLE_DEVICES (the job's GPUs there, in local-rank order) and each GPU's index in it."""
    visible = list(dict.fromkeys(gpu for rank in local_ranks for gpu in gpu_ids[rank]))
    return ",".join(visible), {gpu: index for index, gpu in enumerate(visible)}


@dataclass(frozen=True)
class _JobEnv:
    """What every rank's torchrun environment shares, as strings once (32,768 ranks would make them each)."""

    nccl: Mapping[str, str]
    world_size: str
    num_nodes: str
    master_addr: str
    master_port: str
    threads: str
    elastic: Mapping[str, str]

    @classmethod
    def of(
        cls, plan: JobPlan, num_nodes: int, master_addr: str, master_port: int, attempt: Optional[AttemptSpec]
    ) -> _JobEnv:
        return cls(
            nccl={key: str(value) for key, value in plan.nccl_env.items()},
            world_size=str(plan.world_size),
            num_nodes=str(num_nodes),
            master_addr=str(master_addr),
            master_port=str(master_port),
            threads=str(plan.torch_threads),
            elastic=_elastic_env(attempt) if attempt is not None else {},
        )

    def for_rank(self, world_rank: int, local_rank: int, local_world_size: int, node_rank: int) -> dict[str, str]:
        """One rank's environment: the NCCL settings, torchrun's variables, then the attempt's."""
        rank = str(world_rank)
        env = {
            **self.nccl,
            "RANK": rank,
            "WORLD_SIZE": self.world_size,
            "LOCAL_RANK": str(local_rank),
            "LOCAL_WORLD_SIZE": str(local_world_size),
            "GROUP_RANK": str(node_rank),
            "GROUP_WORLD_SIZE": self.num_nodes,
            "ROLE_RANK": rank,
            "ROLE_WORLD_SIZE": self.world_size,
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": self.master_port,
            "OMP_NUM_THREADS": self.threads,
        }
        env.update(self.elastic)
        return env


def _elastic_env(attempt: AttemptSpec) -> dict[str, str]:
    return {
        "TORCHELASTIC_RUN_ID": attempt.run_id,
        "TORCHELASTIC_RESTART_COUNT": str(attempt.restart_count),
        "TORCHELASTIC_MAX_RESTARTS": str(attempt.max_restarts),
    }
