"""Hydra's sweep overrides as Optuna 4 distributions, and the overrides a trial gets back."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from orchestrator.errors import ConfigError
from orchestrator.sweep.search_space import grid, parse_search_space, suggest, trial_overrides


def test_each_sweep_syntax_is_the_distribution_hydra_optuna_sweeper_made_of_it():
    space = parse_search_space(
        {"optim.name": "choice(sgd,adamw)", "model.hidden": "range(16,64,16)"},
        [
            "optim.lr=tag(log,interval(1e-5,1e-1))",
            "optim.weight_decay=interval(0,0.1)",
            "trainer.max_epochs=int(interval(1,3))",
            "data.batch_size=tag(log,int(interval(16,256)))",
            "data.test_fraction=interval(1,3)",
            "optim.momentum=range(0.5,0.9,0.2)",
            "model=mlp",
        ],
    )
    assert space.distributions == {
        "optim.name": CategoricalDistribution(["sgd", "adamw"]),
        "model.hidden": IntDistribution(16, 64, step=16),
        "optim.lr": FloatDistribution(1e-5, 1e-1, log=True),
        "optim.weight_decay": FloatDistribution(0.0, 0.1),
        "trainer.max_epochs": IntDistribution(1, 3),
        "data.batch_size": IntDistribution(16, 256, log=True),
        "data.test_fraction": FloatDistribution(1.0, 3.0),  # Hydra reads interval's ends as floats
        "optim.momentum": FloatDistribution(0.5, 0.9, step=0.2),
    }
    assert space.fixed == {"model": "mlp"}


def test_the_command_line_wins_over_hydra_sweeper_params_for_the_same_key():
    space = parse_search_space({"optim.lr": "interval(0.1,1)", "model": "choice(mlp,cnn)"}, ["optim.lr=0.01"])
    assert space.fixed == {"optim.lr": "0.01"} and list(space.distributions) == ["model"]


def test_a_trial_asks_for_every_value_and_gets_the_swept_then_the_fixed_overrides():
    space = parse_search_space(
        {}, ["optim.lr=tag(log,interval(1e-5,1e-1))", "optim.name=choice(sgd,adamw)", "model=mlp"]
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial({"optim.lr": 1e-4, "optim.name": "sgd"})  # a planted trial takes its values as they are
    trial = study.ask()
    for name, distribution in space.distributions.items():
        suggest(trial, name, distribution)
    assert trial_overrides(trial.params, space.fixed) == ("optim.lr=0.0001", "optim.name=sgd", "model=mlp")
    fresh = study.ask()
    for name, distribution in space.distributions.items():
        suggest(fresh, name, distribution)
    assert 1e-5 <= fresh.params["optim.lr"] <= 1e-1 and fresh.params["optim.name"] in ("sgd", "adamw")


def test_mistakes_are_config_errors_that_say_what_to_write():
    with pytest.raises(ConfigError, match="both swept and fixed"):
        trial_overrides({"optim.lr": 0.1}, {"optim.lr": "0.2"})
    with pytest.raises(ConfigError, match=r"the grid sampler needs choice\(...\) or range"):
        grid(parse_search_space({}, ["optim.lr=interval(0.1,1)"]).distributions)


def test_the_grid_holds_every_value_of_choices_and_stepped_ranges_ends_included():
    space = parse_search_space({}, ["model.hidden=range(16,48,16)", "optim.name=choice(sgd,adamw)"])
    assert grid(space.distributions) == {"model.hidden": [16, 32, 48], "optim.name": ["sgd", "adamw"]}
