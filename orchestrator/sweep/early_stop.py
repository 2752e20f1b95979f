"""sweep.early_stop=median: stop a trial that does worse than the completed trials did at the same step."""

from __future__ import annotations

import statistics
import threading
from typing import Mapping, Optional

from orchestrator.sweep.trials import EARLY_STOP_TAG, STOPPED


class MedianStoppingRule:
    """A trial whose objective at a step is worse than the median of the completed trials' values there stops.

    Only trials that finished count as completed (not failed or stopped ones), and only those with a
    value at exactly that step. Trials run side by side and consult the rule from their own threads,
    so its state is guarded by a lock. Satisfies orchestrator.sweep.judging.StopRule.
    """

    stopped_status = STOPPED
    stopped_tag = EARLY_STOP_TAG

    def __init__(self, objective: str, direction: str, min_trials: int):
        self.objective = objective
        self.direction = direction
        self.min_trials = min_trials
        self._lock = threading.Lock()
        self._curves: list[dict[int, float]] = []

    def completed(self, curve: Mapping[int, float]) -> None:
        """A trial finished: its objective value at every step it reported one."""
        with self._lock:
            self._curves.append(dict(curve))

    def verdict(self, step: int, value: float) -> Optional[str]:
        """Why a trial whose objective is `value` at `step` should stop now, or None to let it go on."""
        with self._lock:
            seen = [curve[step] for curve in self._curves if step in curve]
        if len(seen) < self.min_trials:
            return None
        median = statistics.median(seen)
        worse = value < median if self.direction == "maximize" else value > median
        if not worse:
            return None
        return (
            f"stopped early: {self.objective}={value:.4g} at step {step} is worse than the median {median:.4g} "
            f"of {len(seen)} completed trial{'s' if len(seen) != 1 else ''} (sweep.early_stop=median)"
        )
