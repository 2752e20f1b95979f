"""Idle worker groups of a sweep, kept for its next trials of the same shape (sweep.reuse_workers).

When a trial's job ends cleanly, its group puts its placement group and its reset rank processes here
instead of removing them; the next trial of the same shape (bundles, strategy, workers per bundle, spares,
runtime environment) takes them, so only its process group and training state are built anew. The shelf
belongs to the sweep, which `close`s it at its end: every group still on it is then removed.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Collection, Hashable, Optional, Protocol

from orchestrator.config.code_shipping import worker_runtime_env
from orchestrator.config.schema import JobConfig
from orchestrator.planning.plan import JobPlan

if TYPE_CHECKING:
    from ray.util.placement_group import PlacementGroup

    from launchers.workers.rank_actor import WorkerHandle


@dataclass(frozen=True)
class GroupShape:
    """What makes a group fit a job: the same bundles, placed the same way, holding the same processes."""

    bundles: tuple[tuple[tuple[str, float], ...], ...]
    strategy: str
    workers_per_bundle: int
    spare_bundles: int
    runtime_env: str

    @classmethod
    def of(cls, plan: JobPlan, job: JobConfig) -> "GroupShape":
        """The shape of the group that `job` runs in under `plan`."""
        spares = -(-job.failure.spare_workers // plan.workers_per_bundle)
        return cls(
            bundles=tuple(tuple(sorted(bundle.items())) for bundle in plan.bundles),
            strategy=plan.strategy,
            workers_per_bundle=plan.workers_per_bundle,
            spare_bundles=spares,
            runtime_env=json.dumps(worker_runtime_env(job), sort_keys=True, default=str),
        )


@dataclass(frozen=True)
class IdleGroup:
    """A placement group and its reset workers, by bundle index, between two jobs."""

    shape: GroupShape
    placement_group: "PlacementGroup"
    by_bundle: dict[int, list["WorkerHandle"]]
    owner: Hashable
    """Who put it here (a sweep's trial number), or who it is reserved for: only that job may take it."""
    reserved: bool = False
    """Whether a job that is starting has been given it (`WorkerShelf.reserve`)."""
    lease: Optional[str] = None
    """The pool's lease it came from (cluster.pool), None for a sweep's own group."""


class GroupSource(Protocol):
    """Where a job's worker group may come from and go back to instead of being made and removed: a sweep's
    shelf of idle groups (sweep.reuse_workers) or a warm pool on the cluster (cluster.pool)."""

    def take(self, shape: GroupShape, owner: Optional[Hashable]) -> Optional[IdleGroup]:
        """A group for a job of `shape`, now the caller's; None when the caller should make its own."""

    def put(self, group: IdleGroup, clean: bool) -> None:
        """The job ended: `group` back, its workers reset when `clean` (else they may be in any state)."""


class WorkerShelf:
    """Idle groups by shape; thread-safe (a sweep's trials end on their own threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[IdleGroup] = []
        self._closed = False

    def put(self, group: IdleGroup, clean: bool = True) -> None:
        """Keep `group` for a later job when `clean`; remove it otherwise, or when the shelf is closed."""
        with self._lock:
            if clean and not self._closed:
                self._idle.append(group)
                return
        release(group)

    def reserve(self, shape: GroupShape, owner: Hashable, among: Collection[Hashable]) -> Optional[Hashable]:
        """Give the oldest unreserved idle group of `shape` put here by one of `among` to `owner` (only it may take
        it now); returns the group's previous owner, or None when there is no such group."""
        with self._lock:
            for index, group in enumerate(self._idle):
                if group.shape == shape and not group.reserved and group.owner in among:
                    self._idle[index] = replace(group, owner=owner, reserved=True)
                    return group.owner
        return None

    def holds(self, owner: Hashable) -> bool:
        """Whether the group `owner` put here is still idle here."""
        with self._lock:
            return any(group.owner == owner for group in self._idle)

    def take(self, shape: GroupShape, owner: Optional[Hashable]) -> Optional[IdleGroup]:
        """The idle group of `shape` that `owner` put here or reserved, now the caller's; None if none."""
        with self._lock:
            for group in self._idle:
                if group.shape == shape and group.owner == owner:
                    self._idle.remove(group)
                    return group
        return None

    def evict(self) -> list[Hashable]:
        """Remove every unreserved idle group (another shape needs their resources); the owners of those removed."""
        with self._lock:
            evicted = [group for group in self._idle if not group.reserved]
            self._idle = [group for group in self._idle if group.reserved]
        for group in evicted:
            release(group)
        return [group.owner for group in evicted]

    def close(self) -> None:
        """Remove every idle group, and every group put here later: the sweep has ended."""
        with self._lock:
            self._closed = True
            evicted, self._idle = self._idle, []
        for group in evicted:
            release(group)


def release(group: IdleGroup) -> None:
    """Kill a group's workers and remove its placement group."""
    import ray
    from ray.util.placement_group import remove_placement_group

    for actors in group.by_bundle.values():
        for actor in actors:
            ray.kill(actor, no_restart=True)
    remove_placement_group(group.placement_group)
