"""The config of hydra/sweeper=optuna and its samplers, stored in Hydra's ConfigStore when Hydra imports this plugin.

The keys are those of hydra-optuna-sweeper where it had them (sampler, direction, storage, study_name,
n_trials, n_jobs, params, custom_search_space). Light imports only, and no `from __future__ import
annotations`: Hydra's scan runs this module outside sys.modules, where a dataclass cannot resolve
string annotations. `orchestrator train` stores its own entry over this one (orchestrator.config.store),
with direction and storage following sweep.direction and sweep.storage.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class SamplerConfig:
    """An Optuna sampler, instantiated from its `_target_` with the node's other keys."""

    _target_: str = MISSING
    seed: Optional[int] = None
    """The sampler's random seed; null = a different sequence every sweep."""


@dataclass
class TPESamplerConfig(SamplerConfig):
    """hydra/sweeper/sampler=tpe (the default): optuna.samplers.TPESampler."""

    _target_: str = "optuna.samplers.TPESampler"
    n_startup_trials: int = 10
    """Trials sampled at random before TPE models the results."""
    multivariate: bool = False


@dataclass
class RandomSamplerConfig(SamplerConfig):
    """hydra/sweeper/sampler=random: optuna.samplers.RandomSampler."""

    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class GridSamplerConfig(SamplerConfig):
    """hydra/sweeper/sampler=grid: optuna.samplers.GridSampler over every value of choice(...) and range(...)."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    """The search space is added when the sweep starts, from the sweep's overrides."""


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    """hydra/sweeper/sampler=nsgaii: optuna.samplers.NSGAIISampler."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50


@dataclass
class OptunaSweeperConfig:
    """hydra/sweeper=optuna: Optuna 4 asks for each trial's values and is told its results (ask-and-tell)."""

    _target_: str = "hydra_plugins.orchestrator_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: SamplerConfig = MISSING
    """The sampling algorithm (hydra/sweeper/sampler=tpe, random, grid, nsgaii)."""
    direction: str = "minimize"
    """minimize or maximize the task's return value (under `orchestrator train`: sweep.direction)."""
    storage: Optional[str] = None
    """The study's database URL; null = in memory (under `orchestrator train`: sweep.storage)."""
    study_name: Optional[str] = None
    """The study's name; null = `sweep-<digest of the sweep's overrides>`, the same for the same command."""
    n_trials: int = 20
    """Trials of the study in all (with sweep.resume, those it already finished count)."""
    n_jobs: int = 2
    """Trials asked for and handed to the launcher at a time."""
    params: Optional[Dict[str, str]] = None
    """The search space as overrides (`optim.lr: tag(log, interval(1e-4, 1e-1))`); the command line adds to it."""
    custom_search_space: Optional[str] = None
    """A function `(config, trial) -> None` (dotted path) that asks the trial for more values."""


def store_configs() -> None:
    """Store hydra/sweeper=optuna and its samplers (Hydra runs this module on every plugin scan)."""
    store = ConfigStore.instance()
    store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConfig, provider="orchestrator")
    samplers = {
        "tpe": TPESamplerConfig,
        "random": RandomSamplerConfig,
        "grid": GridSamplerConfig,
        "nsgaii": NSGAIISamplerConfig,
    }
    for name, node in samplers.items():
        store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="orchestrator")


store_configs()
