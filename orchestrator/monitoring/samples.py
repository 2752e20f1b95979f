"""What node monitors measure and send, as plain values: host and node samples, a monitor's status and notes.

Pure: the probes and samplers that take these readings (psutil, NVML, sockets) import this module, never
the other way round, so summaries and metric names are computed without touching a node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Union

from orchestrator.monitoring.gpu_probe import GpuSample


@dataclass(frozen=True)
class HostSample:
    """One reading of a node and of the job's workers on it."""

    time_s: float
    """Monotonic clock of the node, in seconds."""
    cpu_percent: float
    """Whole-node CPU use since the previous reading, 0-100."""
    ram_used_bytes: int
    ram_total_bytes: int
    rank_rss_bytes: Mapping[int, int]
    """world_rank -> resident memory of the rank's worker process plus its children (a script's python)."""
    rank_cpu_percent: Mapping[int, float]
    """world_rank -> CPU use of the worker and its children since the previous reading (100 = one core)."""
    monitor_cpu_s: Optional[float] = None
    """CPU seconds the monitor's own process has used since it started (start-up included): monitoring's cost."""


@dataclass(frozen=True)
class NodeTargets:
    """What the monitor of one node watches."""

    node: str
    """The short node name used in metric names (node<node_rank>)."""
    ranks: Mapping[int, int]
    """world_rank -> worker pid, for the ranks on this node."""
    visible_devices: Optional[str] = None
    """The ranks' CUDA_VISIBLE_DEVICES (the job's GPUs on this node, in local-rank order); None = no GPUs."""
    device_order: Optional[str] = None
    """The ranks' CUDA_DEVICE_ORDER (None = CUDA's default, FASTEST_FIRST)."""


@dataclass(frozen=True)
class GpuInfo:
    """A GPU of the job: its index as the ranks see it (cuda:<index>) and who it is."""

    index: int
    uuid: str
    name: str = ""


@dataclass(frozen=True)
class MonitorStatus:
    """What a node monitor found when it started: for the driver to print and tag once."""

    node: str
    hostname: str
    gpus: tuple[GpuInfo, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeSample:
    """One sample of a node: host readings and the job's GPUs by index."""

    node: str
    index: int
    """Counts this node monitor's samples from 0."""
    host: HostSample
    gpus: Mapping[int, GpuSample] = field(default_factory=dict)
    wall_time_s: Optional[float] = None
    """When it was taken (seconds since the epoch): each sample keeps its own MLflow timestamp, because
    MLflow stores equal (value, step, timestamp) points of a metric once and samples share the step axis."""


@dataclass(frozen=True)
class MonitorNote:
    """Something a node monitor wants the user told (a sampling error), once per distinct text."""

    node: str
    text: str


MonitorItem = Union[NodeSample, MonitorNote]


def node_name(node_rank: int) -> str:
    """The node's short name in metric names and messages: node<node_rank> (stable for the job)."""
    return f"node{node_rank}"
