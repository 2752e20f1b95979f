"""Pure detectors: stragglers among ranks and GPUs that sit idle, as episodes that start and end.

Each detector is told readings one at a time and answers with the episodes that just started or
ended, so the caller warns once per episode: a straggler episode ends when the rank is back within
the ratio, a low-utilization episode when the GPU's windowed mean is back at the threshold.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass
from typing import Generic, Hashable, Optional, TypeVar

STRAGGLER_WINDOW = 5
"""StepReports per rank whose median is compared (the loop reports every log step and every second)."""
RENEWALS_PER_ROUND = 4
"""How often per round of readings the straggler check takes the median over ranks anew and judges every rank."""
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
    median by at least `min_gap_s` seconds: on millisecond steps a ratio alone flags noise of 0.2 ms.

    A rank is judged at each of its readings against the median over ranks; that median, and with it every
    rank's verdict, is renewed RENEWALS_PER_ROUND times per round of readings (a round: as many readings as
    ranks with a full window), so at every reading while there are no more ranks than that. Judging every
    rank at every reading costs O(ranks) a reading, which a driver that hears 32,768 ranks a second cannot
    pay; this costs O(1) a reading, amortized. A verdict that only a shift of the median over ranks changes
    therefore comes within a quarter of a round: a quarter of a second at one report per rank per second.
    """

    def __init__(self, ratio: float, window: int = STRAGGLER_WINDOW, min_gap_s: float = 0.0):
        self.ratio = ratio
        self.window = window
        self.min_gap_s = min_gap_s
        self._readings: dict[int, collections.deque] = {}
        self._medians: dict[int, float] = {}
        """The ranks with a full window -> their window's median."""
        self._straggling: set[int] = set()
        self._overall: Optional[float] = None
        """The median over ranks as last renewed (None before two ranks had a full window)."""
        self._since_renewal = 0

    def observe(self, world_rank: int, seconds: float) -> list[StragglerEpisode]:
        """Add one step-time reading of a rank; the episodes that start or end with it."""
        readings = self._readings.get(world_rank)
        if readings is None:
            readings = self._readings[world_rank] = collections.deque(maxlen=self.window)
        readings.append(seconds)
        if len(readings) < self.window:
            return []
        ordered = sorted(readings)  # statistics.median, inline: every heartbeat of every rank comes here
        middle = len(ordered) // 2
        median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        self._medians[world_rank] = median
        self._since_renewal += 1
        if len(self._medians) < 2:  # a straggler is only slow relative to other ranks
            return []
        overall = self._overall
        if overall is None or self._since_renewal * RENEWALS_PER_ROUND >= len(self._medians):
            return self._renew()
        # _slow, without a call: the verdict stands at nearly every reading
        if (median > self.ratio * overall and median - overall >= self.min_gap_s) == (world_rank in self._straggling):
            return []
        return self._judge(world_rank, median, overall)

    @property
    def straggling(self) -> frozenset[int]:
        """Ranks currently in a straggler episode."""
        return frozenset(self._straggling)

    def _renew(self) -> list[StragglerEpisode]:
        """Take the median over ranks anew and judge every rank against it."""
        ordered = sorted(self._medians.values())
        overall = self._overall = _middle(ordered)
        self._since_renewal = 0
        # slowness grows with the median: the slow ranks are those from the least slow median on
        first, last = 0, len(ordered)
        while first < last:
            probe = (first + last) // 2
            if self._slow(ordered[probe], overall):
                last = probe
            else:
                first = probe + 1
        cut = ordered[first] if first < len(ordered) else math.inf
        slow = {rank for rank, median in self._medians.items() if median >= cut}
        flipped = sorted(slow.symmetric_difference(self._straggling))
        self._straggling = slow
        return [
            StragglerEpisode(world_rank=rank, started=rank in slow, rank_median_s=self._medians[rank], median_s=overall)
            for rank in flipped
        ]

    def _slow(self, median: float, overall: float) -> bool:
        return median > self.ratio * overall and median - overall >= self.min_gap_s

    def _judge(self, world_rank: int, median: float, overall: float) -> list[StragglerEpisode]:
        slow = self._slow(median, overall)
        if slow == (world_rank in self._straggling):
            return []
        (self._straggling.add if slow else self._straggling.discard)(world_rank)
        return [StragglerEpisode(world_rank=world_rank, started=slow, rank_median_s=median, median_s=overall)]


def _middle(ordered: list[float]) -> float:
    """statistics.median of values already in order (the same arithmetic, so the same value)."""
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


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
        readings = self._readings.get(gpu)
        if readings is None:
            readings = self._readings[gpu] = collections.deque(maxlen=self.window)
        readings.append(utilization_percent)
        if len(readings) < self.window:
            return None
        mean = math.fsum(readings) / len(readings)  # statistics.fmean's arithmetic, at a third of its cost
        low = mean < self.threshold_percent
        if low == (gpu in self._low):
            return None
        (self._low.add if low else self._low.discard)(gpu)
        return LowUtilEpisode(gpu=gpu, started=low, mean_percent=mean, samples=len(readings))
