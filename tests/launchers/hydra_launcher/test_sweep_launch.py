"""A batch of trials is composed and checked before anything starts, and a Ctrl-C does not cut that in half."""

from __future__ import annotations

import signal

import pytest

from orchestrator.cli.commands import main


@pytest.fixture
def ctrl_c_raises():
    """Python's own Ctrl-C handler: a suite started in the background (nohup, `make test &`) inherits SIGINT
    ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_ctrl_c_while_trials_are_composed_stops_the_sweep_once_the_batch_is_composed(
    ctrl_c_raises, tmp_path, monkeypatch
):
    # CI once saw a Ctrl-C land inside OmegaConf while a trial's config was composed: a node was left half-built,
    # its clean-up raised AttributeError in place of the KeyboardInterrupt, and the sweep ended as "invalid
    # configuration" (exit 2) instead of as interrupted (130)
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    compose = ConfigLoaderImpl.load_sweep_config
    composed: list[list[str]] = []

    def ctrl_c_while_composing(self, master_config, sweep_overrides):
        if not composed:
            # to this thread, handled before the call returns (os.kill may reach Python's handler later)
            signal.raise_signal(signal.SIGINT)
        config = compose(self, master_config, sweep_overrides)
        composed.append(list(sweep_overrides))
        return config

    monkeypatch.setattr(ConfigLoaderImpl, "load_sweep_config", ctrl_c_while_composing)
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "mlflow.db"
    code = main(
        [
            "train",
            "-m",
            "model=mlp",
            # our Optuna sweeper composes trials only in the launcher (Hydra's basic sweeper first composes each
            # batch once more itself, in Hydra's code, where a Ctrl-C is not held)
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "optim.lr=choice(0.01,0.02)",
            f"tracking.uri=sqlite:///{store}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    assert code == 130
    # both trials were composed whole before the Ctrl-C was raised
    assert len(composed) == 2 and all(any(o.startswith("optim.lr=") for o in overrides) for overrides in composed)
    # and it stopped the sweep before anything started: no MLflow store, no output (multirun.yaml with the
    # unredacted command line included)
    assert not store.exists()
    assert not (tmp_path / "sweep").exists()
