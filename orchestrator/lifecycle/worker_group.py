"""The worker group as the controller sees it: a protocol and the events it produces.

The Ray implementation lives in `launchers/workers/ray_worker_group.py`; tests drive the controller with fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Protocol, Sequence, Union

from orchestrator.planning.rank_specs import WorkerSpec


@dataclass(frozen=True)
class RankReport:
    """A rank sent a report (see orchestrator.lifecycle.rank_reports)."""

    world_rank: int
    report: object


@dataclass(frozen=True)
class RankExited:
    """A rank's report stream ended normally (its last report was its result or error)."""

    world_rank: int


@dataclass(frozen=True)
class RankLost:
    """A rank's process died (killed, out of memory, node lost) without finishing."""

    world_rank: int
    node_ip: str
    reason: str


@dataclass(frozen=True)
class NodeDraining:
    """A node the group runs ranks on is being drained (a preemption with notice): it goes away by `deadline`."""

    node_id: str
    node_ip: str
    deadline: Optional[float] = None
    """When the node goes, on the clock the group was given (None: no deadline was announced)."""


@dataclass(frozen=True)
class CapacityReturned:
    """An elastic group running below its full size could place more workers again (checked every
    scaling.resize_check_s)."""

    workers: int
    """How many workers the group could run on now."""


GroupEvent = Union[RankReport, RankExited, RankLost, NodeDraining, CapacityReturned]


class WorkerGroup(Protocol):
    """One attempt of the job on the cluster: reserved resources plus one running process per rank."""

    @property
    def specs(self) -> Sequence[WorkerSpec]:
        """The ranks of this group (empty before `start`)."""

    def start(self, resume_from: Optional[str] = None, attempt: int = 0, avoid: frozenset[str] = frozenset()) -> None:
        """Reserve resources, start one worker per rank and set every rank running.

        `attempt` counts the job's restarts before this start (0 for its first); the ranks see it as
        TORCHELASTIC_RESTART_COUNT. No rank is placed on the nodes in `avoid` (node ids).
        """

    def restart(
        self, lost_ranks: set[int], resume_from: Optional[str], attempt: int, avoid: frozenset[str] = frozenset()
    ) -> Mapping[str, float]:
        """End the current attempt on every rank, replace the lost ones, start attempt `attempt` from `resume_from`.

        Ranks on the nodes in `avoid` are replaced too, elsewhere. An elastic group continues on fewer workers
        (at least scaling.min_workers) when not all can be placed within scaling.placement_timeout_s.
        Returns how long the phases took, in seconds (e.g. teardown, placement_and_start).
        """

    def wait(self, timeout_s: float) -> list[GroupEvent]:
        """Events that arrived within `timeout_s` (an empty list when none did)."""

    def request_stop(self) -> None:
        """Ask every rank to stop at the next step the ranks agree on."""

    def shutdown(self) -> None:
        """Stop every worker process and release every reserved resource; safe to call twice."""
