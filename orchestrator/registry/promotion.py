"""Which version an alias should point at, and what moving it changes (pure: no store here)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from orchestrator.registry.errors import RegistryError


@dataclass(frozen=True)
class VersionMetrics:
    """One version of a registered model with the metrics known for it (its tags, else its run's)."""

    version: int
    run_id: Optional[str]
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class PromotionDecision:
    """Move `alias` of `name` from `previous` (None: unset) to `chosen`; values of the metric for both."""

    name: str
    alias: str
    metric: str
    mode: str
    chosen: VersionMetrics
    previous: Optional[VersionMetrics]

    @property
    def changes(self) -> bool:
        """False when the alias already points at the chosen version."""
        return self.previous is None or self.previous.version != self.chosen.version

    def describe(self) -> str:
        """`champion: version 1 (eval/accuracy 0.9120) -> version 3 (eval/accuracy 0.9470)`, or unchanged."""
        before = "(unset)" if self.previous is None else self._version(self.previous)
        after = self._version(self.chosen)
        if not self.changes:
            return f"{self.name}@{self.alias}: unchanged, already {after}"
        return f"{self.name}@{self.alias}: {before} -> {after}"

    def _version(self, version: VersionMetrics) -> str:
        value = version.metrics.get(self.metric)
        shown = "n/a" if value is None else f"{value:.4f}"
        return f"version {version.version} ({self.metric} {shown})"


def choose_version(
    name: str,
    alias: str,
    versions: Sequence[VersionMetrics],
    metric: str,
    mode: str,
    previous_version: Optional[int] = None,
    requested: Optional[int] = None,
) -> PromotionDecision:
    """The version `alias` should point at: `requested`, else the best by `metric` in `mode` (max or min).

    Without `requested`, every version must have the metric: a best among some of them would be a guess.
    Ties go to the newest version.
    """
    if not versions:
        raise RegistryError(f"registered model {name!r} has no versions: register a run's model first")
    by_number = {version.version: version for version in versions}
    previous = by_number.get(previous_version) if previous_version is not None else None
    if requested is not None:
        if requested not in by_number:
            raise RegistryError(
                f"--version {requested}: {name!r} has no such version; its versions: {_numbers(by_number)}"
            )
        return PromotionDecision(name, alias, metric, mode, by_number[requested], previous)
    lacking = sorted(
        (version for version in versions if not _has(version, metric)), key=lambda version: version.version
    )
    if lacking:
        known = _related(sorted({key for version in versions for key in version.metrics}), metric)
        raise RegistryError(
            f"--metric {metric!r}: version{'s' if len(lacking) > 1 else ''} "
            f"{', '.join(str(version.version) for version in lacking)} of {name!r} "
            f"{'have' if len(lacking) > 1 else 'has'} no value for it, so the best cannot be chosen; "
            f"metrics the versions have: {known}; pass --metric NAME, or --version V"
        )
    sign = 1.0 if mode == "max" else -1.0
    best = max(versions, key=lambda version: (sign * version.metrics[metric], version.version))
    return PromotionDecision(name, alias, metric, mode, best, previous)


def _has(version: VersionMetrics, metric: str) -> bool:
    value = version.metrics.get(metric)
    return value is not None and math.isfinite(value)


def _numbers(by_number: Mapping[int, VersionMetrics]) -> str:
    return ", ".join(str(number) for number in sorted(by_number))


SHOWN_METRICS = 12


def _related(names: Sequence[str], metric: str) -> str:
    """The metrics worth suggesting: those in the requested one's group (eval/...) if there are any, at most 12."""
    group = metric.partition("/")[0] + "/" if "/" in metric else ""
    related = [name for name in names if group and name.startswith(group)] or list(names)
    shown = ", ".join(related[:SHOWN_METRICS]) or "none"
    return shown + (f" (and {len(related) - SHOWN_METRICS} more)" if len(related) > SHOWN_METRICS else "")
