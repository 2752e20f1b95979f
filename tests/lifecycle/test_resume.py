"""The pure resume rules: which checkpoint fits a job, and when a finished run may be extended."""

from __future__ import annotations

from orchestrator.lifecycle.resume import extends_finished_run, identity_problems, model_data_identity
from orchestrator.tracking.run_recorder import session_name


def test_the_identity_is_every_model_and_data_key_but_the_loader_processes():
    params = {"model.name": "mlp", "data.name": "digits", "data.num_workers": "2", "optim.lr": "0.1"}
    assert model_data_identity(params) == {"model.name": "mlp", "data.name": "digits"}


def test_a_checkpoint_of_another_model_is_refused_naming_every_differing_key():
    saved = {"model.name": "mlp", "model.hidden_sizes": "[128]", "data.name": "digits"}
    now = {"model.name": "cnn", "model.channels": "[16, 32]", "data.name": "digits"}
    [problem] = identity_problems("latest", saved, now)
    assert problem.startswith("trainer.resume=latest is not valid: its checkpoint was trained with a different model")
    assert "model.channels: (none) in the checkpoint, [16, 32] now" in problem
    assert "model.hidden_sizes: [128] in the checkpoint, (none) now" in problem
    assert "model.name: mlp in the checkpoint, cnn now" in problem
    assert identity_problems("latest", saved, dict(saved)) == []


def test_a_finished_run_is_extended_only_by_asking_for_more_training():
    by_epochs = {"trainer.max_epochs": "4", "trainer.max_steps": "null"}
    assert not extends_finished_run(None, 4, 92, by_epochs)
    assert extends_finished_run(None, 6, 92, by_epochs)
    assert not extends_finished_run(92, 4, 92, by_epochs) and extends_finished_run(120, 4, 92, by_epochs)
    assert not extends_finished_run(None, 9, 20, {"trainer.max_epochs": "4", "trainer.max_steps": "20"})


def test_a_later_command_names_its_artifacts_apart():
    assert session_name("console.log", 2) == "console.2.log"
    assert session_name("hydra/config.yaml", 3) == "hydra/config.3.yaml"
    assert session_name("README", 2) == "README.2"
