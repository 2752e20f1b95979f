"""The warm pool's owner on the cluster: one detached actor that holds the pool's placement group and workers.

`orchestrator pool up` creates it; it outlives that command and lives until `orchestrator pool down` or the
cluster's end. Its rank processes are its own actors (Ray ends them with it), started in its placement group
with torch and the training loop loaded. A job with `cluster.pool=NAME` leases some of them for its ranks and
gives them back at its end; a worker that died, or that a job could not give back clean, is replaced.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from launchers.workers.rank_actor import start_worker

if TYPE_CHECKING:
    from launchers.workers.rank_actor import WorkerHandle

NAMESPACE = "orchestrator"
"""The Ray namespace of every pool's owner: a job's driver finds it there whatever its own namespace."""
PING_TIMEOUT_S = 10.0
"""How long a worker gets to answer before the owner counts it as dead and replaces it."""


def owner_name(pool: str) -> str:
    """The Ray actor name of pool `pool`'s owner (and the prefix of its placement group and workers)."""
    return f"orchestrator-pool-{pool}"


@dataclass(frozen=True)
class Lease:
    """What a job gets from the pool: the placement group, its workers by bundle index, and the lease's id."""

    lease_id: str
    placement_group: Any
    by_bundle: dict[int, list["WorkerHandle"]]


@dataclass(frozen=True)
class WorkerState:
    """One pool worker as `pool status` shows it."""

    bundle_index: int
    node_ip: str
    pid: Optional[int]
    leased_by: Optional[str]
    """The job (its worker group's name) that holds it, or None when it is free."""


class PoolOwner:
    """The pool: `workers` bundles of `bundle` resources, one warmed worker in each."""

    def __init__(self, pool: str, workers: int, bundle: dict[str, float], strategy: str):
        from ray.util.placement_group import placement_group

        self.pool = pool
        self.bundle = dict(bundle)
        self.placement_group = placement_group([dict(bundle)] * workers, strategy=strategy, name=owner_name(pool))
        self.workers: dict[int, WorkerHandle] = {}
        self.leases: dict[str, tuple[str, list[int]]] = {}
        """lease id -> (the job's name, its bundle indices)."""
        self.holders: dict[str, Any] = {}
        """lease id -> an object the leasing driver owns: Ray loses it when that driver dies (see `_reclaim`)."""
        self.reclaimed: list[str] = []
        """The jobs whose leases were taken back because their driver died, oldest first (`pool status` says so)."""
        self._started = 0

    def ready(self, timeout_s: float) -> list[WorkerState]:
        """Wait for the placement group, start and warm every worker; the pool's state. Raises TimeoutError when the
        bundles are not placed within `timeout_s` (the caller then removes the pool)."""
        import ray

        if not self.placement_group.wait(timeout_seconds=timeout_s):
            raise TimeoutError(
                f"the pool's {len(self.placement_group.bundle_specs)} bundles of {self.bundle} were not placed within "
                f"{timeout_s:g} s: the cluster has not that much free"
            )
        for index in range(len(self.placement_group.bundle_specs)):
            if index not in self.workers:
                self.workers[index] = self._start(index)
        ray.get([worker.preload.remote() for worker in self.workers.values()])
        return self.status()

    def status(self) -> list[WorkerState]:
        """Every worker: where it runs, its process, who holds it (dead workers are replaced first)."""
        import ray

        self._reclaim()
        self._replace_dead(free_only=False)
        pids = ray.get([worker.pid.remote() for worker in self.workers.values()])
        ips = ray.get([worker.node_ip.remote() for worker in self.workers.values()])
        holders = {index: job for job, indices in self.leases.values() for index in indices}
        return [
            WorkerState(index, ip, pid, holders.get(index))
            for index, pid, ip in zip(self.workers, pids, ips, strict=True)
        ]

    def taken_back(self) -> list[str]:
        """The jobs whose workers were taken back because their driver died (oldest first)."""
        return list(self.reclaimed)

    def lease(self, count: int, bundle: dict[str, float], job: str, holder: Optional[list[Any]] = None) -> Lease:
        """`count` free workers for job `job`, whose ranks each need `bundle`; ValueError says why not.

        `holder`: [an object ref the job's driver owns] (in a list, so that Ray passes the ref, not its value); when
        the driver dies without giving the workers back, the next `lease` or `status` takes them back."""
        if {name: float(amount) for name, amount in bundle.items()} != {
            name: float(amount) for name, amount in self.bundle.items()
        }:
            raise ValueError(
                f"pool {self.pool!r}'s workers each hold {self.bundle}, the job's ranks each need {bundle}: "
                "start a pool with the job's resources per worker (orchestrator pool up --help)"
            )
        self._reclaim()
        self._replace_dead(free_only=True)
        held = {index for _, indices in self.leases.values() for index in indices}
        free = [index for index in sorted(self.workers) if index not in held]
        if len(free) < count:
            raise ValueError(
                f"pool {self.pool!r} has {len(free)} free workers of {len(self.workers)}, the job needs {count} "
                f"(held by: {', '.join(sorted({job for job, _ in self.leases.values()})) or 'nobody'})"
            )
        lease_id = uuid.uuid4().hex[:12]
        taken = free[:count]
        self.leases[lease_id] = (job, taken)
        if holder:
            self.holders[lease_id] = holder[0]
        return Lease(lease_id, self.placement_group, {index: [self.workers[index]] for index in taken})

    def give_back(self, lease_id: str, by_bundle: dict[int, list["WorkerHandle"]], clean: bool) -> None:
        """The job ended: its workers are free again. Unless `clean` (every worker reset after its attempt ended),
        or a worker is one the job started itself (a replacement), that bundle gets a new worker of the pool's."""
        import ray

        _, indices = self.leases.pop(lease_id, ("", []))
        self.holders.pop(lease_id, None)
        for index in indices:
            returned = by_bundle.get(index, [])
            ours = self.workers.get(index)
            if clean and returned == [ours]:
                continue
            for worker in [*returned, ours]:
                if worker is not None:
                    ray.kill(worker, no_restart=True)
            self.workers[index] = self._start(index)
            self.workers[index].preload.remote()

    def shutdown(self) -> None:
        """End every worker and remove the placement group (`pool down`)."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for worker in self.workers.values():
            ray.kill(worker, no_restart=True)
        self.workers, self.leases = {}, {}
        remove_placement_group(self.placement_group)

    def _reclaim(self) -> None:
        """Take back the workers of every lease whose driver died (killed, or its machine lost) without giving them
        back: they may still be running its ranks, so they are ended and replaced."""
        import ray

        for lease_id, holder in list(self.holders.items()):
            try:
                ray.get(holder, timeout=PING_TIMEOUT_S)
            except ray.exceptions.ObjectLostError:  # OwnerDiedError among them: the driver is gone
                self.reclaimed.append(self.leases[lease_id][0])
                self.give_back(lease_id, {}, clean=False)
            except ray.exceptions.GetTimeoutError:  # not known yet: looked at again next time
                continue

    def _replace_dead(self, free_only: bool) -> None:
        import ray

        held = {index for _, indices in self.leases.values() for index in indices}
        checked = {index: worker for index, worker in self.workers.items() if not (free_only and index in held)}
        pings = {worker.pid.remote(): index for index, worker in checked.items()}
        deadline = time.monotonic() + PING_TIMEOUT_S
        pending = list(pings)
        while pending and time.monotonic() < deadline:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=deadline - time.monotonic())
            for ref in done:
                try:
                    ray.get(ref)
                except Exception:  # the worker died: start another in its bundle
                    self._renew(pings[ref])
        for ref in pending:
            self._renew(pings[ref])

    def _renew(self, index: int) -> None:
        import ray

        ray.kill(self.workers[index], no_restart=True)
        self.workers[index] = self._start(index)
        self.workers[index].preload.remote()

    def _start(self, index: int) -> "WorkerHandle":
        self._started += 1
        return start_worker(self.bundle, self.placement_group, index, f"{owner_name(self.pool)}-worker{self._started}")
