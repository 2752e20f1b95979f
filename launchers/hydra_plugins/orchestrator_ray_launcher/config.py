"""The config of hydra/launcher=ray, stored in Hydra's ConfigStore when Hydra imports this plugin.

Hydra imports every module of the hydra_plugins namespace while it looks for plugins, so any Hydra
application (not only `orchestrator train`) can pick `hydra/launcher=ray`. Light imports only, and no
`from __future__ import annotations`: Hydra's scan runs this module outside sys.modules, where a
dataclass cannot resolve string annotations.
"""

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class RayLauncherConfig:
    """hydra/launcher=ray: every job of a sweep runs on one Ray cluster.

    Under `orchestrator train -m` every job is a multi-worker training job (its `scaling` and `cluster`
    keys say where); for any other Hydra app every job is one Ray task with `cpus_per_job` and
    `gpus_per_job`, in a fresh worker process, on the cluster at `address`.
    """

    _target_: str = "hydra_plugins.orchestrator_ray_launcher.ray_launcher.RayLauncher"
    max_concurrent: Optional[int] = None
    """Jobs running at once at most; null = as many as the cluster's free resources allow."""
    address: Optional[str] = None
    """Other Hydra apps: the Ray cluster to run on (auto, HOST:6379 or ray://HOST:10001); null = an embedded
    local Ray instance for each batch of jobs. `orchestrator train -m` uses cluster.address instead."""
    cpus_per_job: float = 1.0
    """Other Hydra apps: CPUs Ray reserves for each job."""
    gpus_per_job: float = 0.0
    """Other Hydra apps: GPUs Ray reserves for each job (the job sees them in CUDA_VISIBLE_DEVICES)."""


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConfig, provider="orchestrator")
