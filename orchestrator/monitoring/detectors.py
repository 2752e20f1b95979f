"""Pure detectors: stragglers among ranks and GPUs that sit idle, as episodes that start and end.

Each detector is told readings one at a time and answers with the episodes that just started or
ended, so the caller warns once per episode: a straggler episode ends when the rank is back within
the ratio, a low-utilization episode when the GPU's windowed mean is back at the threshold.
"""

from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass
from typing import Generic, Hashable, Optional, TypeVar

STRAGGLER_WINDOW = 5
"""StepReports per rank whose median is compared (the loop reports every log step and every second)."""
UTIL_WINDOW = 6
"""Samples per GPU averaged for the low-utilization check (30 s at the default 5 s interval)."""
UTIL_WARMUP = 6
"""Samples per GPU ignored after training starts (data loading, compilation, NCCL set-up)."""

GpuKey = TypeVar("GpuKey", bound=Hashable)
"""However the caller names a GPU (the driver: its node and index); episodes name it the same way."""


@dataclass(frozen=True)
class StragglerEpisode:
    """A rank entered (started=True) or left a straggler episode."""

    world_rank: int
    started: bool
    rank_median_s: float
    """The rank's median step-time signal over its window."""
    median_s: float
    """The median over ranks of their window medians."""

    @property
    def ratio(self) -> float:
        """How many times the median over ranks this rank takes."""
        return self.rank_median_s / self.median_s if self.median_s > 0 else float("inf")


@dataclass(frozen=True)
class LowUtilEpisode(Generic[GpuKey]):
    """A GPU entered (started=True) or left a low-utilization episode."""

    gpu: GpuKey
    started: bool
    mean_percent: float
    samples: int


class StragglerDetector:
    """Flags a rank whose median over its last `window` readings exceeds ratio x the median over ranks, and the
    median by at least `min_gap_s` seconds: on millisecond steps a ratio alone flags noise of 0.2 ms."""

    def __init__(self, ratio: float, window: int = STRAGGLER_WINDOW, min_gap_s: float = 0.0):
        self.ratio = ratio
        self.window = window
        self.min_gap_s = min_gap_s
        self._readings: dict[int, collections.deque] = {}
        self._straggling: set[int] = set()

    def observe(self, world_rank: int, seconds: float) -> list[StragglerEpisode]:
        """Add one step-time reading of a rank; the episodes that start or end with it."""
        self._readings.setdefault(world_rank, collections.deque(maxlen=self.window)).append(seconds)
        medians = {
            rank: statistics.median(values) for rank, values in self._readings.items() if len(values) == self.window
        }
        if len(medians) < 2:  # a straggler is only slow relative to other ranks
            return []
        overall = statistics.median(medians.values())
        episodes = []
        for rank, median in sorted(medians.items()):
            slow = median > self.ratio * overall and median - overall >= self.min_gap_s
            if slow != (rank in self._straggling):
                (self._straggling.add if slow else self._straggling.discard)(rank)
                episodes.append(StragglerEpisode(world_rank=rank, started=slow, rank_median_s=median, median_s=overall))
        return episodes

    @property
    def straggling(self) -> frozenset[int]:
        """Ranks currently in a straggler episode."""
        return frozenset(self._straggling)


class LowUtilDetector(Generic[GpuKey]):
    """Flags a GPU whose mean utilization over its last `window` samples (after `warmup`) is under a threshold."""

    def __init__(self, threshold_percent: float, window: int = UTIL_WINDOW, warmup: int = UTIL_WARMUP):
        self.threshold_percent = threshold_percent
        self.window = window
        self.warmup = warmup
        self._seen: collections.Counter[GpuKey] = collections.Counter()
        self._readings: dict[GpuKey, collections.deque[float]] = {}
        self._low: set[GpuKey] = set()

    def observe(self, gpu: GpuKey, utilization_percent: float) -> Optional[LowUtilEpisode[GpuKey]]:
        """Add one utilization reading of a GPU; the episode that starts or ends with it, if any."""
        self._seen[gpu] += 1
        if self._seen[gpu] <= self.warmup:
            return None
        readings = self._readings.setdefault(gpu, collections.deque(maxlen=self.window))
        readings.append(utilization_percent)
        if len(readings) < self.window:
            return None
        mean = statistics.fmean(readings)
        low = mean < self.threshold_percent
        if low == (gpu in self._low):
            return None
        (self._low.add if low else self._low.discard)(gpu)
        return LowUtilEpisode(gpu=gpu, started=low, mean_percent=mean, samples=len(readings))
