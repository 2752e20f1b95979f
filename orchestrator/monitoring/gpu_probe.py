"""The GpuProbe protocol (what a node's GPUs read right now) and its null and scripted twins.

A probe is built by the node monitor on its own node, from a picklable factory (a function or class
with no arguments, or a functools.partial): `orchestrator.monitoring.nvml_probe.open_nvml_probe` in
production, a ScriptedProbe in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional, Protocol, Sequence

from orchestrator.monitoring.gpu_devices import GpuDevice


@dataclass(frozen=True)
class GpuProcess:
    """A compute process NVML lists on a GPU."""

    pid: int
    used_memory_bytes: Optional[int] = None


@dataclass(frozen=True)
class GpuSample:
    """One reading of one GPU; a field is None where the device or driver does not offer it."""

    uuid: str
    time_s: float
    """Monotonic clock of the node when the GPU was read, in seconds (the energy integral's time axis)."""
    utilization_percent: Optional[float] = None
    """Share of the last sample period in which any kernel ran (a rank spinning in an NCCL wait counts)."""
    memory_utilization_percent: Optional[float] = None
    """Share of the last sample period in which device memory was read or written."""
    memory_used_bytes: Optional[int] = None
    memory_total_bytes: Optional[int] = None
    power_w: Optional[float] = None
    power_limit_w: Optional[float] = None
    """The enforced power limit."""
    temperature_c: Optional[float] = None
    sm_clock_mhz: Optional[float] = None
    throttle_reasons: Optional[int] = None
    """NVML's clocks-event-reasons bitmask (nvmlClocksEventReason*); 0 = running at full clocks."""
    ecc_corrected_errors: Optional[int] = None
    """Volatile (since driver load) ECC counts; read at the detail cadence only."""
    ecc_uncorrected_errors: Optional[int] = None
    processes: Optional[tuple[GpuProcess, ...]] = None
    """Compute processes on the GPU; read at the detail cadence only (it holds a driver lock)."""
    pcie_tx_kb_s: Optional[float] = None
    """PCIe throughput over a 20 ms NVML window; detail cadence only."""
    pcie_rx_kb_s: Optional[float] = None
    gpm: Mapping[str, float] = field(default_factory=dict)
    """GPM metrics over the time since the previous sample (Hopper and newer): name -> percent."""


class GpuProbe(Protocol):
    """Reads the GPUs of one node. Built on that node; used by one sampling thread; closed once."""

    note: str
    """One line for the user: what the probe offers (GPM, ...) or why GPU monitoring is off."""

    def devices(self) -> Sequence[GpuDevice]:
        """Every physical GPU the node's driver lists, with its MIG instances."""

    def sample(self, uuids: Sequence[str], detail: bool) -> list[GpuSample]:
        """Read the named GPUs; `detail` adds the slow readings (processes, ECC, PCIe)."""

    def gpm_supported(self, uuid: str) -> bool:
        """Whether the driver offers GPM metrics (SM and tensor-core activity) for this GPU."""

    def close(self) -> None:
        """Release the driver (idempotent)."""


ProbeFactory = Callable[[], GpuProbe]


class NullProbe:
    """No GPU monitoring on this node: no devices, no samples, and the reason in `note`."""

    def __init__(self, note: str = "GPU monitoring off"):
        self.note = note

    def devices(self) -> Sequence[GpuDevice]:
        return ()

    def sample(self, uuids: Sequence[str], detail: bool) -> list[GpuSample]:
        return []

    def gpm_supported(self, uuid: str) -> bool:
        return False

    def close(self) -> None:
        pass


class ScriptedProbe:
    """The test double: each `sample()` call returns the next scripted reading of each GPU asked for.

    A GPU whose script has run out is left out of later samples, so a test knows exactly which
    readings were taken. The detail flags it was called with are kept in `detail_calls`.
    """

    def __init__(
        self, devices: Sequence[GpuDevice], script: Mapping[str, Sequence[GpuSample]], note: str = "scripted GPUs"
    ):
        self._devices = tuple(devices)
        self.script = {uuid: list(samples) for uuid, samples in script.items()}
        self.note = note
        self.calls = 0
        self.detail_calls: list[bool] = []
        self.closed = False

    def devices(self) -> Sequence[GpuDevice]:
        return self._devices

    def sample(self, uuids: Sequence[str], detail: bool) -> list[GpuSample]:
        tick = self.calls
        self.calls += 1
        self.detail_calls.append(detail)
        return [self.script[uuid][tick] for uuid in uuids if tick < len(self.script.get(uuid, ()))]

    def gpm_supported(self, uuid: str) -> bool:
        return any(sample.gpm for sample in self.script.get(uuid, ()))

    def close(self) -> None:
        self.closed = True
