"""hydra/sweeper=optuna's study in a real SQLite storage: created, refused, resumed, without a cluster."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from launchers.hydra_launcher.optuna_sweep import open_study
from orchestrator.config.schema import SweepConfig
from orchestrator.errors import ConfigError


def _open(name: str, storage: str, resume: bool, direction: str = "maximize") -> optuna.Study:
    sweep = SweepConfig(storage=storage, resume=resume, direction=direction)
    return open_study(name, sweep, optuna.samplers.RandomSampler(seed=0), optuna.pruners.NopPruner())


def test_a_new_study_is_created_and_a_second_sweep_of_the_same_name_must_resume_it(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = _open("sweep-a", storage, resume=False)
    assert study.study_name == "sweep-a" and optuna.get_all_study_names(storage) == ["sweep-a"]
    with pytest.raises(ConfigError) as raised:
        _open("sweep-a", storage, resume=False)
    assert "the Optuna study 'sweep-a' already exists in sweep.storage=" in str(raised.value)
    assert "continue it with sweep.resume=true" in str(raised.value)


def test_resuming_names_the_storage_and_its_studies_when_the_study_is_not_there(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    with pytest.raises(ConfigError, match="has no database file"):
        _open("sweep-a", storage, resume=True)
    assert not (tmp_path / "optuna.db").exists()  # a mistyped path leaves no empty database behind
    _open("sweep-a", storage, resume=False)
    _open("sweep-b", storage, resume=False)
    with pytest.raises(ConfigError) as raised:
        _open("sweep-c", storage, resume=True)
    assert (
        f"sweep.resume=true: there is no Optuna study 'sweep-c' in sweep.storage={storage}; its studies: "
        f"sweep-a, sweep-b (name one with hydra.sweeper.study_name=NAME)"
    ) in str(raised.value)
    with pytest.raises(ConfigError, match="sweep.direction=minimize is not valid to resume study 'sweep-a'"):
        _open("sweep-a", storage, resume=True, direction="minimize")


def test_resuming_marks_the_trials_a_killed_sweep_left_running_failed_and_keeps_the_others(tmp_path):
    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = _open("sweep-a", storage, resume=False)
    done = first.ask()
    done.suggest_float("x", 0, 1)
    first.tell(done, 0.5)
    first.ask()  # the sweep was killed while this one ran
    resumed = _open("sweep-a", storage, resume=True)
    assert [trial.state for trial in resumed.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert resumed.trials[0].params == done.params and resumed.trials[0].value == 0.5
