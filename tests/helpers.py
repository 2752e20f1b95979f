"""Shared test helpers: composing jobs like the CLI does, and waiting on eventually-consistent state."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from orchestrator.config.schema import JobConfig


def compose_job(overrides: Sequence[str], base_dir: Path) -> JobConfig:
    """Compose conf/ with Hydra exactly as `orchestrator train` does, then load and validate it."""
    from hydra import compose, initialize_config_dir

    from orchestrator.cli import conf_dir
    from orchestrator.config.load import load_config
    from orchestrator.config.store import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return load_config(cfg, base_dir)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until true; for state that Ray reports eventually (actor deaths)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


def state_address() -> str:
    """The connected cluster's GCS address for ray.util.state: without one, the state API guesses from the
    machine's session files and fails when other Ray instances run on the same machine."""
    import ray

    return ray.get_runtime_context().gcs_address


def job_resources_left(prefix: str = "orchestrator-") -> tuple[list[str], list[str]]:
    """Names of alive actors and live placement groups that belong to orchestrator jobs."""
    from ray.util.state import list_actors, list_placement_groups

    address = state_address()
    actors = [a.name for a in list_actors(address=address, filters=[("state", "!=", "DEAD")], limit=1000)
              if (a.name or "").startswith(prefix)]
    groups = [g.name for g in list_placement_groups(address=address, limit=1000)
              if (g.name or "").startswith(prefix) and g.state != "REMOVED"]
    return actors, groups


def assert_no_job_resources(prefix: str = "orchestrator-", timeout_s: float = 15.0) -> None:
    """Every actor and placement group of orchestrator jobs is gone (Ray reports deaths eventually)."""
    wait_until(lambda: job_resources_left(prefix) == ([], []), timeout_s,
               f"no actors/placement groups named {prefix}* (left: {job_resources_left(prefix)})")
