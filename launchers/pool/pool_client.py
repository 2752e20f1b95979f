"""The warm pool from the outside: `orchestrator pool up/down/status`, and a job's lease (cluster.pool=NAME)."""

from __future__ import annotations

import json
from typing import Any, Hashable, Optional

from launchers.pool.pool_owner import NAMESPACE, Lease, PoolOwner, WorkerState, owner_name
from launchers.workers.worker_shelf import GroupShape, IdleGroup
from orchestrator.errors import LaunchError


def find_owner(pool: str) -> Any:
    """Pool `pool`'s owner (an actor handle of PoolOwner) on the connected cluster, or None when there is none."""
    import ray

    try:
        return ray.get_actor(owner_name(pool), namespace=NAMESPACE)
    except ValueError:
        return None


def pool_up(pool: str, workers: int, bundle: dict[str, float], strategy: str, timeout_s: float) -> list[WorkerState]:
    """Start pool `pool` on the connected cluster: its owner (detached: it outlives this process) places `workers`
    bundles of `bundle` and warms one worker in each. Nothing is left behind when it cannot."""
    import ray

    if find_owner(pool) is not None:
        raise LaunchError(f"pool {pool!r} is up already: `orchestrator pool status --name {pool}` shows it")
    owner: Any = (
        ray.remote(PoolOwner)
        .options(name=owner_name(pool), namespace=NAMESPACE, lifetime="detached", num_cpus=0, max_restarts=0)
        .remote(pool, workers, bundle, strategy)
    )
    try:
        return ray.get(owner.ready.remote(timeout_s))
    except BaseException as error:
        _remove(owner)
        if isinstance(error, ray.exceptions.RayTaskError) and isinstance(error.cause, TimeoutError):
            raise LaunchError(f"pool {pool!r} was not started: {error.cause}") from None
        raise


def pool_down(pool: str) -> int:
    """Remove pool `pool` (its workers, its placement group, its owner); how many workers it had."""
    owner = find_owner(pool)
    if owner is None:
        raise LaunchError(f"there is no pool {pool!r} on this cluster")
    import ray

    count = len(ray.get(owner.status.remote()))
    _remove(owner)
    return count


def pool_status(pool: str) -> list[WorkerState]:
    """Pool `pool`'s workers (a dead one is replaced first)."""
    import ray

    owner = find_owner(pool)
    if owner is None:
        raise LaunchError(f"there is no pool {pool!r} on this cluster: `orchestrator pool up` starts one")
    return ray.get(owner.status.remote())


def pool_taken_back(pool: str) -> list[str]:
    """The jobs whose workers pool `pool` took back because their driver died without giving them back."""
    import ray

    owner = find_owner(pool)
    if owner is None:
        raise LaunchError(f"there is no pool {pool!r} on this cluster: `orchestrator pool up` starts one")
    return ray.get(owner.taken_back.remote())


def _remove(owner: Any) -> None:
    import ray

    try:
        ray.get(owner.shutdown.remote())
    finally:
        ray.kill(owner, no_restart=True)


class PoolSource:
    """A job's worker group from pool `pool` (cluster.pool): leased at its start, given back at its end."""

    def __init__(self, pool: str):
        self.pool = pool

    def take(self, shape: GroupShape, owner: Optional[Hashable]) -> Optional[IdleGroup]:
        """Lease the job's workers for `owner` (the job's name, shown by `pool status`); LaunchError says why the
        pool cannot serve the job."""
        import ray

        pool_owner = find_owner(self.pool)
        if pool_owner is None:
            raise LaunchError(
                f"cluster.pool={self.pool}: there is no such pool on this cluster (`orchestrator pool up --name "
                f"{self.pool} ...` starts one)"
            )
        unsupported = sorted(set(json.loads(shape.runtime_env)) - {"env_vars"})
        if unsupported:  # environment variables are set per attempt; the rest Ray applies only at a worker's start
            raise LaunchError(
                f"cluster.pool={self.pool}: the pool's workers started without the job's runtime_env keys "
                f"{', '.join(unsupported)}; on a pool a job can set only runtime_env.env_vars"
            )
        if shape.workers_per_bundle != 1 or shape.spare_bundles:
            raise LaunchError(
                f"cluster.pool={self.pool}: a pool holds one worker per bundle and no spares; the job asks for "
                f"{shape.workers_per_bundle} per bundle and {shape.spare_bundles} spare bundles"
            )
        # an object this driver owns: the pool takes the workers back if it is lost, that is if this driver dies
        holder = ray.put(f"lease holder: {owner}")
        try:
            lease: Lease = ray.get(
                pool_owner.lease.remote(len(shape.bundles), dict(shape.bundles[0]), str(owner), [holder])
            )
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, ValueError):
                raise LaunchError(f"cluster.pool={self.pool}: {error.cause}") from None
            raise
        return IdleGroup(shape, lease.placement_group, lease.by_bundle, owner, lease=lease.lease_id)

    def put(self, group: IdleGroup, clean: bool) -> None:
        """Give the workers back to the pool (which replaces those the job could not give back clean)."""
        import ray

        pool_owner = find_owner(self.pool)
        if pool_owner is not None and group.lease is not None:  # else the pool went down meanwhile, with its workers
            ray.get(pool_owner.give_back.remote(group.lease, group.by_bundle, clean))
