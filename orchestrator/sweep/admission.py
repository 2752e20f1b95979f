"""Which trial may start now: the sweep's own account of what its running trials hold, and Ray's view.

Ray's view of free resources lags behind: a placement group just created is not subtracted yet, and
one just removed is not given back yet. The sweep therefore books what each trial it starts holds
(where the placement model puts its bundles) and counts as free, on every node, the smaller of what
Ray says is free now and what was free when the sweep began less its own bookings. Resources another
user takes meanwhile lower the first; the lag on a trial that just ended only delays the next start
until Ray catches up.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Hashable, Mapping, Optional

from orchestrator.planning.placement import predict_placement
from orchestrator.planning.plan import ClusterSnapshot, JobPlan

Booking = Mapping[str, Mapping[str, float]]
"""node id -> resources a trial holds there."""


def booking(plan: JobPlan, nodes: tuple[Optional[str], ...]) -> dict[str, dict[str, float]]:
    """What a trial holds on each node when its bundles land on `nodes` (None: not placed, nothing held)."""
    held: dict[str, dict[str, float]] = {}
    for bundle, node in zip(plan.bundles, nodes):
        if node is None:
            continue
        per_node = held.setdefault(node, {})
        for name, amount in bundle.items():
            per_node[name] = per_node.get(name, 0.0) + amount
    return held


def free_for_trials(baseline: ClusterSnapshot, now: ClusterSnapshot, bookings: list[Booking]) -> ClusterSnapshot:
    """`now` with each node's free resources capped at what was free at the start less the sweep's bookings."""
    start = {node.node_id: node.available for node in baseline.nodes}
    nodes = []
    for node in now.nodes:
        if node.node_id not in start:  # a node added since the sweep began (an autoscaler): Ray's view only
            nodes.append(node)
            continue
        booked: dict[str, float] = {}
        for held in bookings:
            for name, amount in held.get(node.node_id, {}).items():
                booked[name] = booked.get(name, 0.0) + amount
        available = {
            name: min(amount, start[node.node_id].get(name, 0.0) - booked.get(name, 0.0))
            for name, amount in node.available.items()
        }
        nodes.append(replace(node, available=available))
    return replace(now, nodes=tuple(nodes))


class Admission:
    """Books the resources of the sweep's running trials and decides whether the next one may start."""

    def __init__(self, baseline: ClusterSnapshot, max_concurrent: Optional[int]):
        self.baseline = baseline
        self.max_concurrent = max_concurrent
        self.bookings: dict[Hashable, Booking] = {}
        self.alone: Optional[Hashable] = None
        """A trial that did not fit what was free when it started: it runs alone (see `admit`)."""
        self.idle: dict[Hashable, Booking] = {}
        """What the idle groups of ended trials hold, kept for the next trial of their shape (sweep.reuse_workers)."""

    def admit(self, key: Hashable, plan: JobPlan, now: ClusterSnapshot) -> Optional[str]:
        """Book and return None when the trial may start now, else say why it waits.

        With nothing of the sweep running, a trial starts even if it does not fit what is free: its own
        placement wait (scaling.placement_timeout_s, time for an autoscaler to add nodes) then decides,
        as for a single job. No other trial starts beside it, which would take what it waits for.
        """
        capped = self.capped()
        if capped is not None:
            return capped
        held = [*self.bookings.values(), *self.idle.values()]
        prediction = predict_placement(plan, free_for_trials(self.baseline, now, held))
        if not prediction.placeable:
            if self.bookings or self.idle:  # idle groups are removed first (the session's call), then it may start
                return prediction.problems[0] if prediction.problems else "its bundles do not fit what is free now"
            self.alone = key
        self.bookings[key] = booking(plan, prediction.nodes) if prediction.placeable else {}
        return None

    def capped(self) -> Optional[str]:
        """Why no trial may start whatever it needs (one runs alone, or max_concurrent run), else None."""
        if self.alone is not None:
            return f"trial {self.alone} needs more than was free when it started and runs alone"
        if self.max_concurrent is not None and len(self.bookings) >= self.max_concurrent:
            return f"{len(self.bookings)} of hydra.launcher.max_concurrent={self.max_concurrent} trials are running"
        return None

    def reuse(self, key: Hashable, idle_key: Hashable) -> Optional[str]:
        """Book for trial `key` what the idle group `idle_key` holds (it runs there) and return None, or say why it
        waits; nothing new is placed, so only the caps apply."""
        capped = self.capped()
        if capped is not None:
            return capped
        self.bookings[key] = self.idle.pop(idle_key, {})
        return None

    def shelve(self, key: Hashable, idle_key: Hashable) -> None:
        """Trial `key` ended and its group waits, idle, as `idle_key`: what it holds stays booked."""
        self.idle[idle_key] = self.bookings.pop(key, {})
        if self.alone == key:
            self.alone = None

    def unshelve(self, idle_key: Hashable) -> None:
        """The idle group `idle_key` was removed: what it held is free again."""
        self.idle.pop(idle_key, None)

    def release(self, key: Hashable) -> None:
        """The trial ended: what it booked is free again."""
        self.bookings.pop(key, None)
        if self.alone == key:
            self.alone = None

    @property
    def running(self) -> int:
        """Trials booked now."""
        return len(self.bookings)
