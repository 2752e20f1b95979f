"""Pure planning: JobConfig + ClusterSnapshot -> JobPlan (what to reserve, how to place it).

Imports no ray: the launcher turns a live cluster into a ClusterSnapshot and the plan into a
placement group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

from orchestrator.config.schema import JobConfig, ScalingConfig
from orchestrator.errors import PlanError

GIB = 1024**3


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
    """What the launcher reserves and starts: bundles, and workers_per_bundle workers in each."""

    world_size: int
    backend: str
    """Resolved torch.distributed backend: nccl or gloo."""
    strategy: str
    """The placement group strategy used (STRICT_SPREAD for per-node bundles)."""
    worker_resources: Mapping[str, float]
    """Ray resources one worker holds, e.g. {"CPU": 1.0, "GPU": 1.0, "memory": bytes, custom...}."""
    torch_threads: int
    """intra-op threads per worker: its CPU share, at least 1 (oversubscribing cores is slow)."""
    global_batch_size: int
    bundles: tuple[Mapping[str, float], ...] = field(default=())
    workers_per_bundle: int = 1
    """1, or scaling.workers_per_node when every node gets one bundle holding all its workers."""
    nccl_env: Mapping[str, str] = field(default_factory=dict)


def resolve_backend(backend: str, gpus_per_worker: float) -> str:
    """`auto` -> nccl when each worker holds a GPU, else gloo."""
    if backend != "auto":
        return backend
    return "nccl" if gpus_per_worker > 0 else "gloo"


def worker_resources(scaling: ScalingConfig) -> dict[str, float]:
    """The Ray resources one worker reserves."""
    resources = {"CPU": float(scaling.cpus_per_worker)}
    if scaling.gpus_per_worker > 0:
        resources["GPU"] = float(scaling.gpus_per_worker)
    if scaling.memory_per_worker_gb is not None:
        resources["memory"] = float(scaling.memory_per_worker_gb) * GIB
    resources.update({name: float(amount) for name, amount in scaling.resources_per_worker.items()})
    return resources


def plan_job(job: JobConfig, cluster: ClusterSnapshot) -> JobPlan:
    """Plan the job on this cluster, or raise PlanError saying what is missing and what to change."""
    scaling = job.scaling
    resources = worker_resources(scaling)
    _check_capacity(job, cluster, resources)
    per_bundle = scaling.workers_per_node or 1
    bundle = {name: amount * per_bundle for name, amount in resources.items()}
    return JobPlan(
        world_size=scaling.num_workers,
        backend=resolve_backend(scaling.backend, scaling.gpus_per_worker),
        strategy="STRICT_SPREAD" if scaling.workers_per_node else scaling.placement_strategy,
        worker_resources=resources,
        torch_threads=max(1, int(scaling.cpus_per_worker)),
        global_batch_size=job.data.batch_size * scaling.num_workers * job.trainer.grad_accum_steps,
        bundles=tuple(dict(bundle) for _ in range(scaling.num_workers // per_bundle)),
        workers_per_bundle=per_bundle,
        nccl_env=dict(scaling.nccl_env),
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
        return  # an autoscaler may still add nodes; the placement wait decides
    spares = job.failure.spare_workers
    workers = scaling.num_workers + spares
    cpus_needed = workers * scaling.cpus_per_worker
    cpus_there = cluster.total("CPU")
    if cpus_needed > cpus_there:
        counted = f"{scaling.num_workers} workers + {spares} spares" if spares else f"{workers} workers"
        lower = "scaling.num_workers, failure.spare_workers" if spares else "scaling.num_workers"
        raise PlanError(
            f"job needs {cpus_needed:g} CPUs ({counted} x {scaling.cpus_per_worker:g}), "
            f"the embedded cluster has {cpus_there:g}: lower {lower} or scaling.cpus_per_worker, "
            f"or raise cluster.num_cpus"
        )
    for name, amount in resources.items():
        largest = max((node.total.get(name, 0.0) for node in cluster.nodes), default=0.0)
        if amount > largest:
            raise PlanError(
                f"one worker needs {name}={_amount(name, amount)}, the largest node has "
                f"{_amount(name, largest)}: lower it in scaling.*_per_worker"
            )


def _amount(name: str, amount: float) -> str:
    return f"{amount / GIB:.1f} GiB" if name == "memory" else f"{amount:g}"


_PLACEMENT_GROUP_RESOURCE = re.compile(r"_group_(\d+_)?[0-9a-f]{16,}$")
"""Ray's own per-placement-group resources (CPU_group_<id>, bundle_group_0_<id>), which no one asks for."""


def format_resources(resources: Mapping[str, float]) -> str:
    """`{CPU: 2, GPU: 1, memory: 4 GiB}`: resources as users write them (Ray's node: markers and placement
    groups' own resources left out)."""
    shown = [
        f"{name}: {_amount(name, amount)}"
        for name, amount in sorted(resources.items())
        if not name.startswith("node:")
        and not name.endswith("object_store_memory")
        and not _PLACEMENT_GROUP_RESOURCE.search(name)
    ]
    return "{" + ", ".join(shown) + "}"
