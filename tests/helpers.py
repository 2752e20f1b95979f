"""Shared test helpers: composing jobs like the CLI does, and waiting on eventually-consistent state."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from orchestrator.config.schema import JobConfig


def compose_job(overrides: Sequence[str], base_dir: Path) -> JobConfig:
    """Compose conf/ with Hydra exactly as `orchestrator train` does, then load and validate it."""
    from orchestrator.config.compose import compose_job as compose

    return compose(overrides, base_dir)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until true; for state that Ray reports eventually (actor deaths)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


def session_address() -> str:
    """The GCS address of the cluster this test process is connected to.

    ray.util.state without an address looks for "the latest cluster on the machine", which is
    another cluster whenever someone else runs one; tests always name theirs.
    """
    import ray

    return ray.get_runtime_context().gcs_address


def live_actors(address: Optional[str] = None) -> list:
    """Actors of the cluster at `address` (default: this session's) that are not dead, with details."""
    from ray.util.state import list_actors

    return list_actors(address=address or session_address(), filters=[("state", "!=", "DEAD")], limit=1000,
                       detail=True)


def job_resources_left(prefix: str = "orchestrator-", address: Optional[str] = None) -> tuple[list[str], list[str]]:
    """Names of alive actors and live placement groups that belong to orchestrator jobs."""
    from ray.util.state import list_placement_groups

    address = address or session_address()
    actors = [a.name for a in live_actors(address) if (a.name or "").startswith(prefix)]
    groups = [g.name for g in list_placement_groups(address=address, limit=1000)
              if (g.name or "").startswith(prefix) and g.state != "REMOVED"]
    return actors, groups


def assert_no_job_resources(prefix: str = "orchestrator-", timeout_s: float = 15.0) -> None:
    """Every actor and placement group of orchestrator jobs is gone (Ray reports deaths eventually)."""
    wait_until(lambda: job_resources_left(prefix) == ([], []), timeout_s,
               f"no actors/placement groups named {prefix}* (left: {job_resources_left(prefix)})")


def worker_pid(address: Optional[str] = None) -> Optional[int]:
    """The PID of some alive worker actor of an orchestrator job, or None while there is none."""
    alive = [a for a in live_actors(address) if a.state == "ALIVE" and a.class_name == "WorkerActor"
             and (a.name or "").startswith("orchestrator-") and a.pid]
    return alive[0].pid if alive else None


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on the loopback interface right now (all bound at once, so distinct)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()
