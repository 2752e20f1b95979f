"""What one node monitor samples: the job's ranks on that node and the GPUs they hold, by UUID."""

from __future__ import annotations

import itertools
import operator
import os
import socket
import time
from typing import TYPE_CHECKING, Callable, Sequence

from orchestrator.monitoring.gpu_devices import DeviceMappingError, resolve_visible
from orchestrator.monitoring.gpu_probe import (
    GpuProbe,
    NullProbe,
    ProbeFactory,
)
from orchestrator.monitoring.host_probe import HostProbe
from orchestrator.monitoring.samples import (
    GpuInfo,
    MonitorStatus,
    NodeSample,
    NodeTargets,
    node_name,
)

if TYPE_CHECKING:  # only a type here: the monitor actor then does not import the planning core (omegaconf)
    from orchestrator.planning.rank_specs import WorkerSpec

DETAIL_INTERVAL_S = 30.0
"""How often the slow GPU readings (processes, ECC, PCIe) are taken, at most."""
_NODE_RANK, _WORLD_RANK, _PID = (operator.attrgetter(name) for name in ("node_rank", "world_rank", "pid"))


def targets_by_node(specs: Sequence[WorkerSpec]) -> dict[str, tuple[str, NodeTargets]]:
    """node name -> (Ray node id, what that node's monitor watches), from the group's worker specs."""
    groups: dict[int, list[WorkerSpec]] = {}
    # runs of one node's ranks (groupby, map and zip loop in C: a Python loop over 32,768 ranks is the cost)
    for node_rank, run in itertools.groupby(specs, key=_NODE_RANK):
        groups.setdefault(node_rank, []).extend(run)
    targets = {}
    for node_rank, group in groups.items():
        node = node_name(node_rank)
        env = group[0].env  # every rank on a node sees the same job GPUs (rendezvous.worker_specs)
        pids = dict(zip(map(_WORLD_RANK, group), map(_PID, group)))
        targets[node] = (
            group[0].node_id,
            NodeTargets(
                node=node,
                ranks={rank: pid for rank, pid in pids.items() if pid is not None} if None in pids.values() else pids,
                visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
                device_order=env.get("CUDA_DEVICE_ORDER"),
            ),
        )
    return targets


class NodeSampler:
    """Takes NodeSamples: host and GPUs every time; the slow readings (GPU process lists, ECC, PCIe, the
    workers' child processes) every `detail_every`-th time."""

    def __init__(
        self,
        targets: NodeTargets,
        host: HostProbe,
        gpu: GpuProbe,
        gpus: Sequence[GpuInfo],
        detail_every: int,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.targets = targets
        self.wall_clock = wall_clock
        self.host = host
        self.gpu = gpu
        self.gpus = tuple(gpus)
        self.detail_every = detail_every
        self.taken = 0

    def sample(self) -> NodeSample:
        """Read the host and the job's GPUs now."""
        detail = self.taken % self.detail_every == 0
        readings = {reading.uuid: reading for reading in self.gpu.sample([g.uuid for g in self.gpus], detail)}
        gpus = {gpu.index: readings[gpu.uuid] for gpu in self.gpus if gpu.uuid in readings}
        sample = NodeSample(
            node=self.targets.node,
            index=self.taken,
            host=self.host.sample(refresh_children=detail),
            gpus=gpus,
            wall_time_s=self.wall_clock(),
        )
        self.taken += 1
        return sample

    def close(self) -> None:
        """Release the GPU probe."""
        self.gpu.close()


def detail_every(interval_s: float) -> int:
    """Samples between two detailed ones, so that detail comes about every DETAIL_INTERVAL_S."""
    return max(1, round(DETAIL_INTERVAL_S / interval_s))


def open_sampler(
    targets: NodeTargets, probe_factory: ProbeFactory, interval_s: float
) -> tuple[NodeSampler, MonitorStatus]:
    """Build the node's sampler on this node: host probe started, job GPUs resolved to UUIDs."""
    gpu, gpus, notes = _open_gpus(targets, probe_factory)
    host = HostProbe(targets.ranks)
    host.start()
    status = MonitorStatus(node=targets.node, hostname=socket.gethostname(), gpus=gpus, notes=notes)
    return NodeSampler(targets, host, gpu, gpus, detail_every(interval_s)), status


def _open_gpus(
    targets: NodeTargets, probe_factory: ProbeFactory
) -> tuple[GpuProbe, tuple[GpuInfo, ...], tuple[str, ...]]:
    if not targets.visible_devices:
        return NullProbe("no GPUs in this job on this node"), (), ()  # CPU jobs never touch NVML
    probe = probe_factory()
    devices = probe.devices()
    if not devices:
        return probe, (), (probe.note,)
    # the job's own CUDA_DEVICE_ORDER, else the node's (workers inherit the raylet's environment, as this actor does)
    device_order = targets.device_order or os.environ.get("CUDA_DEVICE_ORDER")
    try:
        mapping = resolve_visible(targets.visible_devices, devices, device_order)
    except DeviceMappingError as error:
        probe.close()
        return NullProbe(), (), (f"GPU monitoring off: {error}",)
    names = {device.uuid: device.name for device in devices}
    names.update({mig.uuid: f"{device.name} MIG" for device in devices for mig in device.mig})
    gpus = tuple(GpuInfo(index=index, uuid=uuid, name=names.get(uuid, "")) for index, uuid in enumerate(mapping.uuids))
    with_gpm = sum(probe.gpm_supported(gpu.uuid) for gpu in gpus)
    gpm_note = (
        f"GPM metrics (SM and tensor-core activity) offered on {with_gpm} of {len(gpus)} GPUs"
        if with_gpm
        else "GPM metrics not offered by this driver/GPU: utilization is kernel time only"
    )
    notes = (f"{probe.note}; {gpm_note}",) + ((mapping.note,) if mapping.note else ())
    return probe, gpus, notes
