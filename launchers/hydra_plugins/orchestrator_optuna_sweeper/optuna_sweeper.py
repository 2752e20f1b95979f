"""The sweeper class Hydra instantiates for hydra/sweeper=optuna (its config: .config.OptunaSweeperConfig).

Hydra imports every module of the hydra_plugins namespace when it scans for plugins, so this one imports
nothing heavy: the sweep itself (Optuna, the study, the batches of trials) is
launchers.hydra_launcher.optuna_sweep, imported when the sweep starts.
"""

from __future__ import annotations

from typing import Any, List, Mapping, Optional

from hydra.plugins.sweeper import Sweeper

from hydra_plugins.orchestrator_optuna_sweeper.config import OptunaSweeperConfig  # noqa: F401 (stores the config)


class OptunaSweeper(Sweeper):
    """Asks Optuna 4 for trials (study.ask), hands them to the launcher `n_jobs` at a time, tells it the results."""

    def __init__(
        self,
        sampler: Any,
        direction: str = "minimize",
        storage: Optional[str] = None,
        study_name: Optional[str] = None,
        n_trials: int = 20,
        n_jobs: int = 2,
        params: Optional[Mapping[str, str]] = None,
        custom_search_space: Optional[str] = None,
    ) -> None:
        self.sampler = sampler
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.params = dict(params or {})
        self.custom_search_space = custom_search_space
        self.config: Any = None
        self.hydra_context: Any = None
        self.task_function: Any = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        """Keep what Hydra hands over and instantiate the launcher the sweep's trials go to."""
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: List[str]) -> None:
        """Run the study to n_trials and write optimization_results.yaml in the sweep's directory."""
        from launchers.hydra_launcher.optuna_sweep import run_sweep

        run_sweep(self, arguments)
