"""The launcher class Hydra instantiates for hydra/launcher=ray (its config: .config.RayLauncherConfig).

Hydra imports every module of the hydra_plugins namespace when it scans for plugins, so this one
imports nothing heavy: the work is done in launchers.hydra_launcher.sweep_launch (orchestrator trials) or
launchers.hydra_launcher.app_launch (any other Hydra app), imported when a batch launches.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from hydra.plugins.launcher import Launcher

from hydra_plugins.orchestrator_ray_launcher.config import RayLauncherConfig  # noqa: F401 (stores the config)


class RayLauncher(Launcher):
    """Runs every job the sweeper asks for on one Ray cluster: an orchestrator training job under
    `orchestrator train -m`, else one Ray task running the app's task function."""

    def __init__(
        self,
        max_concurrent: Optional[int] = None,
        address: Optional[str] = None,
        cpus_per_job: float = 1.0,
        gpus_per_job: float = 0.0,
    ) -> None:
        self.max_concurrent = max_concurrent
        self.address = address
        self.cpus_per_job = cpus_per_job
        self.gpus_per_job = gpus_per_job
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        """Keep what Hydra hands over: the sweep's config, its context and the task function."""
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[Any]:
        """Run one batch of jobs; a JobReturn per job, in order."""
        from orchestrator.sweep.session_holder import SweepSessionHolder

        if not isinstance(self.task_function, SweepSessionHolder):  # not `orchestrator train -m`
            from launchers.hydra_launcher.app_launch import launch_app

            return launch_app(self, job_overrides, initial_job_idx)
        from launchers.hydra_launcher.sweep_launch import launch

        return launch(self, job_overrides, initial_job_idx)

    def launch_judged(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, judges: Sequence[Any]
    ) -> Sequence[Any]:
        """Run one batch of orchestrator trials, trial i judged by judges[i] (hydra/sweeper=optuna's pruning).

        Satisfies orchestrator.sweep.judging.JudgedLauncher; a JobReturn per trial, in order.
        """
        from launchers.hydra_launcher.sweep_launch import launch

        return launch(self, job_overrides, initial_job_idx, judges)
