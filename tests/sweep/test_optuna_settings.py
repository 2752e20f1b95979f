"""hydra/sweeper=optuna's pure rules: which settings go together, the study's name, which trials count."""

from __future__ import annotations

import pytest

from orchestrator.config.schema import SweepConfig
from orchestrator.sweep.optuna_settings import (
    agreement_problem,
    consecutive_runs,
    counts_toward_n_trials,
    default_study_name,
    optuna_outcome,
    resumed_seed,
    sweeper_problems,
)

STORE = "sqlite:///mlflow.db"


def test_asha_and_hyperband_need_the_optuna_sweeper_and_pruning_needs_the_ray_launcher():
    [problem] = sweeper_problems(SweepConfig(early_stop="asha"), "basic", "ray", STORE)
    assert problem.startswith(
        "sweep.early_stop=asha needs hydra/sweeper=optuna (it is Optuna's SuccessiveHalvingPruner)"
    )
    assert "HyperbandPruner" in sweeper_problems(SweepConfig(early_stop="hyperband"), "basic", "ray", STORE)[0]
    assert sweeper_problems(SweepConfig(early_stop="median"), "basic", "ray", STORE) == []  # as before
    assert sweeper_problems(SweepConfig(early_stop="asha"), "optuna", "ray", STORE) == []
    [problem] = sweeper_problems(SweepConfig(early_stop="median"), "optuna", "basic", STORE)
    assert "sweep.early_stop=median needs hydra/launcher=ray" in problem


def test_a_storage_needs_the_optuna_sweeper_and_may_not_be_mlflows_own_file():
    problems = sweeper_problems(SweepConfig(storage="sqlite:///optuna.db", resume=True), "basic", "ray", STORE)
    assert [problem.split(" is for")[0] for problem in problems] == [
        "sweep.storage=sqlite:///optuna.db",
        "sweep.resume=true",
    ]
    assert sweeper_problems(SweepConfig(storage="sqlite:///optuna.db"), "optuna", "ray", STORE) == []
    # the same file written another way is still the same file
    [problem] = sweeper_problems(SweepConfig(storage="sqlite:///./mlflow.db"), "optuna", "ray", STORE)
    assert "it is MLflow's store" in problem and "alembic_version" in problem and "sqlite:///optuna.db" in problem


def test_hydra_sweeper_keys_follow_the_sweep_keys_and_a_different_value_is_a_conflict():
    assert agreement_problem("storage", None, None) is None
    assert agreement_problem("storage", "sqlite:///a.db", "sqlite:///a.db") is None
    assert agreement_problem("storage", "sqlite:///a.db", None) == (
        "hydra.sweeper.storage=sqlite:///a.db disagrees with sweep.storage=None: set sweep.storage only "
        "(hydra.sweeper.storage follows it)"
    )


def test_the_default_study_name_is_the_same_for_the_same_sweep_resumed_elsewhere():
    sweep = ["model=mlp", "optim.lr=tag(log,interval(1e-4,1e-1))"]
    name = default_study_name(sweep, {})
    assert name.startswith("sweep-") and len(name) == len("sweep-") + 10
    resumed = [*reversed(sweep), "sweep.resume=true", "sweep.storage=sqlite:///o.db", "cluster.address=h:6379"]
    assert default_study_name(resumed, {}) == name
    assert default_study_name([*sweep, "model.hidden=64"], {}) != name
    assert default_study_name(sweep, {"optim.name": "choice(sgd,adamw)"}) != name


@pytest.mark.parametrize(
    ("state", "status", "counts"),
    [
        ("COMPLETE", "FINISHED", True),
        ("PRUNED", "PRUNED", True),
        ("FAIL", "FAILED", True),  # a trial that failed on its own ran: it is not run again
        ("FAIL", "KILLED", False),  # Ctrl-C stopped it
        ("FAIL", "NOT STARTED", False),
        ("FAIL", None, False),  # left RUNNING by a killed sweep, marked FAIL on resume
        ("RUNNING", None, False),
        ("WAITING", None, False),  # enqueued, not run yet
    ],
)
def test_which_trials_count_toward_n_trials(state, status, counts):
    assert counts_toward_n_trials(state, status) is counts


def test_what_optuna_is_told_about_each_ending():
    assert optuna_outcome("FINISHED", 0.9) == ("COMPLETE", 0.9)
    assert optuna_outcome("FINISHED", None) == ("FAIL", None)  # finished without reporting the objective
    assert optuna_outcome("FINISHED", float("nan")) == ("FAIL", None)
    assert optuna_outcome("PRUNED", 0.1) == ("PRUNED", None)  # Optuna keeps the last reported value
    for status in ("FAILED", "KILLED", "NOT STARTED"):
        assert optuna_outcome(status, 0.5) == ("FAIL", None)


def test_a_batch_is_launched_in_runs_of_consecutive_trial_numbers():
    assert consecutive_runs([3, 4, 5]) == [[3, 4, 5]]
    assert consecutive_runs([3, 4, 7, 9, 10]) == [[3, 4], [7], [9, 10]]
    assert consecutive_runs([]) == []


def test_a_resumed_study_moves_its_seed_on_by_its_trials_so_as_not_to_replay_them():
    assert resumed_seed(0, 6) == 6 and resumed_seed(7, 0) == 7
    assert resumed_seed(None, 6) is None
