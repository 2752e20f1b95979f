"""Pure planning: JobConfig + ClusterSnapshot -> JobPlan (what to reserve, how to place it).

Imports no ray: the launcher turns a live cluster into a ClusterSnapshot and the plan into a
placement group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from orchestrator.config.schema import JobConfig
from orchestrator.errors import PlanError


@dataclass(frozen=True)
class NodeSnapshot:
    """One alive Ray node: its id, IP and resources (total and free right now)."""

    node_id: str
    ip: str
    total: Mapping[str, float]
    available: Mapping[str, float]


@dataclass(frozen=True)
class ClusterSnapshot:
    """The cluster as seen when the job is planned."""

    nodes: tuple[NodeSnapshot, ...]
    fixed_size: bool = False
    """True for the embedded instance: no autoscaler will add nodes, so shortfalls are final."""

    def total(self, resource: str) -> float:
        """Sum of `resource` over all nodes."""
        return sum(node.total.get(resource, 0.0) for node in self.nodes)

    def node(self, node_id: str) -> NodeSnapshot:
        """The node with this id (KeyError if it is not alive)."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)


@dataclass(frozen=True)
class JobPlan:
    """What the launcher reserves and starts: one bundle and one worker per rank."""

    world_size: int
    backend: str
    """Resolved torch.distributed backend: nccl or gloo."""
    strategy: str
    worker_resources: Mapping[str, float]
    """Ray resources one worker (and its bundle) holds, e.g. {"CPU": 1.0, "GPU": 1.0}."""
    torch_threads: int
    """intra-op threads per worker: its CPU share, at least 1 (oversubscribing 2 cores is slow)."""
    global_batch_size: int
    bundles: tuple[Mapping[str, float], ...] = field(default=())


def resolve_backend(backend: str, gpus_per_worker: float) -> str:
    """`auto` -> nccl when each worker holds a GPU, else gloo."""
    if backend != "auto":
        return backend
    return "nccl" if gpus_per_worker > 0 else "gloo"


def plan_job(job: JobConfig, cluster: ClusterSnapshot) -> JobPlan:
    """Plan the job on this cluster, or raise PlanError saying what is missing and what to change."""
    scaling = job.scaling
    resources = {"CPU": float(scaling.cpus_per_worker)}
    if scaling.gpus_per_worker > 0:
        resources["GPU"] = float(scaling.gpus_per_worker)
    _check_capacity(job, cluster, resources)
    return JobPlan(
        world_size=scaling.num_workers,
        backend=resolve_backend(scaling.backend, scaling.gpus_per_worker),
        strategy=scaling.placement_strategy,
        worker_resources=resources,
        torch_threads=max(1, int(scaling.cpus_per_worker)),
        global_batch_size=job.data.batch_size * scaling.num_workers * job.trainer.grad_accum_steps,
        bundles=tuple(dict(resources) for _ in range(scaling.num_workers)),
    )


def _check_capacity(job: JobConfig, cluster: ClusterSnapshot, resources: Mapping[str, float]) -> None:
    scaling = job.scaling
    gpus_needed = scaling.num_workers * scaling.gpus_per_worker
    gpus_there = cluster.total("GPU")
    if gpus_needed > gpus_there:
        raise PlanError(
            f"job needs {gpus_needed:g} GPUs, cluster has {gpus_there:g}: set scaling.gpus_per_worker=0 "
            f"or set cluster.address to a GPU cluster"
        )
    if not cluster.fixed_size:
        return  # an autoscaler may still add CPU nodes; the placement wait decides
    cpus_needed = scaling.num_workers * scaling.cpus_per_worker
    cpus_there = cluster.total("CPU")
    if cpus_needed > cpus_there:
        raise PlanError(
            f"job needs {cpus_needed:g} CPUs ({scaling.num_workers} workers x {scaling.cpus_per_worker:g}), "
            f"the embedded cluster has {cpus_there:g}: lower scaling.num_workers or scaling.cpus_per_worker, "
            f"or raise cluster.num_cpus"
        )
    largest = max((node.total.get("CPU", 0.0) for node in cluster.nodes), default=0.0)
    if resources["CPU"] > largest:
        raise PlanError(
            f"one worker needs {resources['CPU']:g} CPUs, the largest node has {largest:g}: "
            f"lower scaling.cpus_per_worker"
        )
