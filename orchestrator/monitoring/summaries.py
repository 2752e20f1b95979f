"""Pure end-of-job summaries: per-GPU means, peaks and energy, per-node CPU and memory.

The tallies fold samples in as they arrive (constant memory for jobs of any length); `summarize_gpu`
and `summarize_host` fold a whole sequence at once. Energy is the trapezoid integral of power over
the GPU's own reading times, so it covers the span from the first to the last sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence, TypeVar

from orchestrator.monitoring.gpu_probe import GpuSample
from orchestrator.monitoring.samples import HostSample

MIB = 1024 * 1024
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class GpuSummary:
    """One GPU over the job (a None field: the GPU never reported that reading)."""

    samples: int
    utilization_mean_percent: Optional[float]
    utilization_peak_percent: Optional[float]
    memory_used_peak_mib: Optional[float]
    power_mean_w: Optional[float]
    energy_wh: float
    """Trapezoid integral of power over time, in watt-hours."""
    gpm_mean_percent: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class HostSummary:
    """One node over the job."""

    samples: int
    cpu_mean_percent: Optional[float]
    cpu_peak_percent: Optional[float]
    ram_used_peak_mib: Optional[float]
    rank_rss_peak_mib: Mapping[int, float] = field(default_factory=dict)
    monitor_cpu_s: Optional[float] = None
    """CPU seconds the node's monitor used, start-up included (its last reading)."""


def energy_wh(points: Sequence[tuple[float, float]]) -> float:
    """Trapezoid integral of (time_s, power_w) points in time order, in Wh (steps back in time are skipped)."""
    return sum(_joules(earlier, later) for earlier, later in zip(points, points[1:])) / SECONDS_PER_HOUR


def _joules(earlier: tuple[float, float], later: tuple[float, float]) -> float:
    (t0, p0), (t1, p1) = earlier, later
    return (p0 + p1) / 2.0 * (t1 - t0) if t1 > t0 else 0.0


_Key = TypeVar("_Key", str, int)


class _Stat:
    """Count, sum and peak of one series."""

    def __init__(self) -> None:
        self.count, self.total = 0, 0.0
        self.peak: Optional[float] = None

    def add(self, value: Optional[float]) -> None:
        if value is None:
            return
        self.count += 1
        self.total += value
        if self.peak is None or value > self.peak:  # max(peak, value), without a call per reading
            self.peak = value

    @property
    def mean(self) -> Optional[float]:
        return self.total / self.count if self.count else None


class _Series:
    """Count, sum and peak of a series that exists from its first value on (so never empty): a GPM
    metric or a rank's RSS, which appear with a reading rather than as a reading that may be missing."""

    def __init__(self, first: float) -> None:
        self.count, self.total, self.peak = 1, first, first

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value > self.peak:
            self.peak = value

    @property
    def mean(self) -> float:
        return self.total / self.count


def _add_to(series: dict[_Key, _Series], key: _Key, value: float) -> None:
    if key in series:
        series[key].add(value)
    else:
        series[key] = _Series(value)


class GpuTally:
    """Folds one GPU's samples into its GpuSummary."""

    def __init__(self) -> None:
        self.samples = 0
        self.utilization, self.memory, self.power = _Stat(), _Stat(), _Stat()
        self.gpm: dict[str, _Series] = {}
        self.joules = 0.0
        self.last_power: Optional[tuple[float, float]] = None

    def add(self, sample: GpuSample) -> None:
        """Fold in one reading."""
        self.samples += 1
        self.utilization.add(sample.utilization_percent)
        self.memory.add(None if sample.memory_used_bytes is None else sample.memory_used_bytes / MIB)
        self.power.add(sample.power_w)
        for name, value in sample.gpm.items():
            _add_to(self.gpm, name, value)
        if sample.power_w is not None:
            point = (sample.time_s, sample.power_w)
            if self.last_power is not None:
                self.joules += _joules(self.last_power, point)
            if self.last_power is None or point[0] > self.last_power[0]:
                self.last_power = point

    def summary(self) -> GpuSummary:
        """The GPU's summary so far."""
        return GpuSummary(
            samples=self.samples,
            utilization_mean_percent=self.utilization.mean,
            utilization_peak_percent=self.utilization.peak,
            memory_used_peak_mib=self.memory.peak,
            power_mean_w=self.power.mean,
            energy_wh=self.joules / SECONDS_PER_HOUR,
            gpm_mean_percent={name: stat.mean for name, stat in sorted(self.gpm.items())},
        )


class HostTally:
    """Folds one node's host samples into its HostSummary."""

    def __init__(self) -> None:
        self.samples = 0
        self.cpu, self.ram = _Stat(), _Stat()
        self.rss: dict[int, _Series] = {}
        self.monitor_cpu_s: Optional[float] = None

    def add(self, sample: HostSample) -> None:
        """Fold in one reading."""
        self.samples += 1
        self.monitor_cpu_s = sample.monitor_cpu_s if sample.monitor_cpu_s is not None else self.monitor_cpu_s
        self.cpu.add(sample.cpu_percent)
        self.ram.add(sample.ram_used_bytes / MIB)
        for world_rank, rss in sample.rank_rss_bytes.items():
            _add_to(self.rss, world_rank, rss / MIB)

    def summary(self) -> HostSummary:
        """The node's summary so far."""
        return HostSummary(
            samples=self.samples,
            cpu_mean_percent=self.cpu.mean,
            cpu_peak_percent=self.cpu.peak,
            ram_used_peak_mib=self.ram.peak,
            rank_rss_peak_mib={rank: stat.peak for rank, stat in sorted(self.rss.items())},
            monitor_cpu_s=self.monitor_cpu_s,
        )


def summarize_gpu(samples: Iterable[GpuSample]) -> GpuSummary:
    """Means, peaks and energy of one GPU's samples (in time order)."""
    tally = GpuTally()
    for sample in samples:
        tally.add(sample)
    return tally.summary()


def summarize_host(samples: Iterable[HostSample]) -> HostSummary:
    """CPU mean and peak, RAM peak and per-rank RSS peaks of one node's samples."""
    tally = HostTally()
    for sample in samples:
        tally.add(sample)
    return tally.summary()
