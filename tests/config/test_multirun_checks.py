"""`orchestrator train -m`: what sweep.* needs from hydra/sweeper and hydra/launcher, said before Hydra starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config.compose import check_train_args
from orchestrator.config.store import OptunaMissing
from orchestrator.errors import ConfigError


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sweep.early_stop=asha"], "sweep.early_stop=asha needs hydra/sweeper=optuna"),
        (["sweep.early_stop=hyperband"], "sweep.early_stop=hyperband needs hydra/sweeper=optuna"),
        (
            ["hydra/sweeper=optuna", "hydra/launcher=basic", "sweep.early_stop=asha"],
            "sweep.early_stop=asha needs hydra/launcher=ray",
        ),
        (["sweep.storage=sqlite:///optuna.db"], "sweep.storage=sqlite:///optuna.db is for the Optuna study"),
        (
            ["hydra/sweeper=optuna", "sweep.storage=sqlite:///mlflow.db"],
            "sweep.storage=sqlite:///mlflow.db is not valid: it is MLflow's store",
        ),
        (["hydra/sweeper=optuna", "sweep.resume=true"], "resuming needs the study's database: set sweep.storage"),
    ],
)
def test_sweep_settings_the_chosen_sweeper_cannot_honour_are_config_errors(tmp_path: Path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)  # where `orchestrator train` runs: relative sqlite:/// paths are from there
    with pytest.raises(ConfigError) as raised:
        check_train_args(["-m", "optim.lr=1e-3,1e-2", *args], tmp_path)
    assert expected in str(raised.value) and raised.value.exit_code == 2


def test_the_same_settings_are_accepted_where_they_apply(tmp_path: Path):
    check_train_args(["-m", "optim.lr=1e-3,1e-2", "sweep.early_stop=median"], tmp_path)  # the basic sweeper's rule
    optuna = ["-m", "hydra/sweeper=optuna", "optim.lr=tag(log,interval(1e-4,1e-1))"]
    check_train_args(
        [*optuna, "sweep.early_stop=hyperband", "sweep.storage=sqlite:///o.db", "sweep.resume=true"], tmp_path
    )
    check_train_args(["sweep.early_stop=asha"], tmp_path)  # a single job is no sweep: nothing to prune


def test_without_optuna_the_sweeper_says_which_extra_to_install():
    with pytest.raises(ConfigError, match=r"needs Optuna 4, in the `sweep` extra: pip install 'orchestrator\[sweep\]'"):
        OptunaMissing(direction="maximize")
