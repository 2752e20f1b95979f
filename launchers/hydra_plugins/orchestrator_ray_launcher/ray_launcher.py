"""The launcher class Hydra instantiates for hydra/launcher=ray (config: orchestrator.config.schema.RayLauncherConfig).

Hydra imports every module of the hydra_plugins namespace when it scans for plugins, so this one
imports nothing heavy: the work is done in launchers.sweep_launch, imported when a batch launches.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from hydra.plugins.launcher import Launcher


class RayLauncher(Launcher):
    """Runs every trial the sweeper asks for as an orchestrator job of its own on one shared Ray cluster."""

    def __init__(self, max_concurrent: Optional[int] = None) -> None:
        self.max_concurrent = max_concurrent
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        """Keep what Hydra hands over: the sweep's config, its context and the task function."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        """Run one batch of trials; a JobReturn per trial, in order."""
        from launchers.sweep_launch import launch

        return launch(self, job_overrides, initial_job_idx)
