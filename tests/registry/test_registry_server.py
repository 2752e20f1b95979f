"""The deploy loop against a real `mlflow server`: registry versions, tags and aliases, promote by a metric,
export to ONNX and pt2 with the parity check, MLflow's scoring server answering, a sweep registering its best
trial, and a real job registering its model at its end.

The runs are logged once for the module (tiny MLPs on digits, a few seconds each); each test that moves an
alias uses an alias of its own, so the tests do not depend on their order.
"""

from __future__ import annotations

import hashlib
import io
import re
from types import SimpleNamespace

import pytest

from orchestrator.cli.commands import main
from orchestrator.config.schema import DigitsConfig, MlpConfig, TrackingConfig
from orchestrator.registry.store import register_run_model
from orchestrator.registry.version_tags import CONFIG_TAG, RUN_TAG

CONFIG_TEXT = "model:\n  name: mlp\n"
ACCURACIES = (0.81, 0.93, 0.88)
LOSSES = (0.60, 0.35, 0.20)


def _log_run(client, experiment_id: str, uri: str, accuracy: float, loss: float, with_model: bool = True) -> str:
    import torch

    from orchestrator.tracking.model_log import log_pytorch_model
    from orchestrator.train.data import load_dataset
    from orchestrator.train.models import build_model

    data = load_dataset(DigitsConfig(), 0)
    run_id = client.create_run(experiment_id, tags={"orchestrator.overrides": "model=mlp"}).info.run_id
    client.log_metric(run_id, "eval/accuracy", accuracy)
    client.log_metric(run_id, "eval/loss", loss)
    client.log_text(run_id, CONFIG_TEXT, "config.yaml")
    if with_model:
        torch.manual_seed(int(accuracy * 100))
        model = build_model(MlpConfig(hidden_sizes=[16]), data.input_shape, data.num_classes)
        log_pytorch_model(uri, run_id, model, data.test_x[:4].numpy(), "pt2")
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def logged(mlflow_server):
    """Three finished runs with a logged pt2 model, registered as versions 1-3 of `deploy-loop`, and one without a model."""
    from mlflow import MlflowClient

    uri = mlflow_server.spec.url
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("deploy-loop")
    run_ids = [_log_run(client, experiment_id, uri, acc, loss) for acc, loss in zip(ACCURACIES, LOSSES)]
    versions = [register_run_model(client, run_id, "deploy-loop", "candidate") for run_id in run_ids]
    bare = _log_run(client, experiment_id, uri, 0.99, 0.01, with_model=False)
    return SimpleNamespace(
        uri=uri, client=client, run_ids=run_ids, versions=versions, bare=bare, experiment_id=experiment_id
    )


def test_each_registration_is_a_new_version_tagged_with_its_run_metrics_and_config_and_the_alias_moves(logged):
    client = logged.client
    assert [version.version for version in logged.versions] == [1, 2, 3]
    for number, run_id, accuracy in zip((1, 2, 3), logged.run_ids, ACCURACIES):
        version = client.get_model_version("deploy-loop", str(number))
        assert version.run_id == run_id
        assert version.tags[RUN_TAG] == run_id
        assert float(version.tags["eval/accuracy"]) == accuracy
        assert version.tags[CONFIG_TAG] == hashlib.sha256(CONFIG_TEXT.encode()).hexdigest()
    assert client.get_model_version_by_alias("deploy-loop", "candidate").version == "3"


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_promote_moves_the_alias_to_the_best_version_in_the_metrics_direction(logged, capsys):
    uri = ("--tracking-uri", logged.uri)
    code, out, err = _cli(capsys, "promote", "deploy-loop", "--alias", "champion", *uri)
    assert (code, err) == (0, "")
    assert out == "deploy-loop@champion: (unset) -> version 2 (eval/accuracy 0.9300)\n"
    code, out, _ = _cli(capsys, "promote", "deploy-loop", "--alias", "champion", "--metric", "eval/loss", *uri)
    assert out == "deploy-loop@champion: version 2 (eval/loss 0.3500) -> version 3 (eval/loss 0.2000)\n"
    assert logged.client.get_model_version_by_alias("deploy-loop", "champion").version == "3"
    code, out, _ = _cli(capsys, "promote", "deploy-loop", "--alias", "champion", "--metric", "eval/loss", *uri)
    assert out == "deploy-loop@champion: unchanged, already version 3 (eval/loss 0.2000)\n"
    code, out, _ = _cli(capsys, "promote", "deploy-loop", "--alias", "champion", "--version", "1", *uri)
    assert out == "deploy-loop@champion: version 3 (eval/accuracy 0.8800) -> version 1 (eval/accuracy 0.8100)\n"


def test_promote_refuses_a_missing_metric_and_an_unknown_model(logged, capsys):
    uri = ("--tracking-uri", logged.uri)
    code, out, err = _cli(capsys, "promote", "deploy-loop", "--alias", "staging", "--metric", "eval/f1", *uri)
    assert code == 2 and out == ""
    assert "versions 1, 2, 3 of 'deploy-loop' have no value for it" in err
    assert "metrics the versions have: eval/accuracy, eval/loss" in err
    code, _, err = _cli(capsys, "promote", "no-such-model", "--alias", "staging", *uri)
    assert code == 2
    assert "registered model 'no-such-model' does not exist; registered models: " in err and "deploy-loop" in err
    assert logged.client.get_registered_model("deploy-loop").aliases.get("staging") is None


def test_export_to_onnx_checks_parity_logs_the_file_and_the_scoring_server_answers_alike(logged, capsys, tmp_path):
    code, out, err = _cli(
        capsys, "export", "models:/deploy-loop/2", "--out", str(tmp_path), "--serve-check", "--tracking-uri", logged.uri
    )
    assert code == 0, err
    path = tmp_path / "deploy-loop-v2.onnx"
    assert path.is_file()
    assert "tolerance: |exported - eager| <= 0.0001 + 0.001 * |eager|" in out
    assert re.search(r"input example \(4 rows\): max abs error \S+, max rel error \S+: ok", out)
    assert re.search(r"eval batch \(64 rows\): max abs error \S+, max rel error \S+: ok", out)
    assert re.search(r"served batch \(64 rows\): max abs error \S+, max rel error \S+: ok; server stopped", out)
    artifacts = [info.path for info in logged.client.list_artifacts(logged.run_ids[1], "export")]
    assert artifacts == ["export/deploy-loop-v2.onnx"]
    # the file is there: never overwritten, and nothing is logged again
    code, _, err = _cli(capsys, "export", "models:/deploy-loop/2", "--out", str(tmp_path), "--tracking-uri", logged.uri)
    assert code == 2 and f"{path} exists and is never overwritten" in err


def test_export_to_pt2_from_a_run_id_and_an_alias_that_does_not_exist(logged, capsys, tmp_path):
    run_id = logged.run_ids[0]
    code, out, err = _cli(
        capsys, "export", run_id, "--format", "pt2", "--out", str(tmp_path), "--tracking-uri", logged.uri
    )
    assert code == 0, err
    assert (tmp_path / f"run-{run_id[:8]}.pt2").is_file()
    assert "parity in torch.export.load against the eager model" in out
    code, _, err = _cli(
        capsys, "export", "models:/deploy-loop@nobody", "--out", str(tmp_path), "--tracking-uri", logged.uri
    )
    assert code == 2 and "models:/deploy-loop@nobody does not exist; versions of 'deploy-loop': 1, 2, 3" in err
    code, _, err = _cli(capsys, "export", logged.bare, "--out", str(tmp_path), "--tracking-uri", logged.uri)
    assert code == 2 and f"run {logged.bare} has no logged model named 'model'" in err


def test_a_sweep_registers_only_its_best_finished_trial_once(logged):
    from launchers.jobs.sweep_report import print_summary
    from orchestrator.sweep.trials import TrialRecord
    from tests.helpers import job_config

    job = job_config(["model=mlp", f"tracking.uri={logged.uri}", "tracking.register_as=sweep-best"])
    records = [
        TrialRecord(number=0, overrides=("optim.lr=0.1",), status="FINISHED", objective=0.81, run_id=logged.run_ids[0]),
        TrialRecord(
            number=1, overrides=("optim.lr=0.01",), status="FINISHED", objective=0.93, run_id=logged.run_ids[1]
        ),
        TrialRecord(number=2, overrides=("optim.lr=1.0",), status="FAILED", objective=0.99, run_id=logged.bare),
    ]
    settings = SimpleNamespace(sweep_id="s1", overrides=("optim.lr=0.1,0.01,1.0",), fixed_keys=frozenset())
    stream = io.StringIO()
    print_summary(stream, records, job, settings, None, 1.0)
    assert "registered the best trial (1)'s model as sweep-best version 1" in stream.getvalue()
    versions = logged.client.search_model_versions("name = 'sweep-best'")
    assert [(version.version, version.run_id) for version in versions] == [("1", logged.run_ids[1])]


def test_a_run_without_a_logged_model_is_reported_not_registered(logged):
    from orchestrator.registry.after_run import register_after_run

    line = register_after_run(TrackingConfig(uri=logged.uri, register_as="bare"), logged.bare, "the run")
    assert line.startswith(f"MLflow: the run ({logged.bare}) was not registered as 'bare': RegistryError: run ")
    assert "has no logged model named 'model'" in line


def test_a_job_registers_its_model_at_its_end_with_the_alias(ray_cluster, mlflow_server, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from launchers.jobs.job_runner import run_job
    from orchestrator.cli.console import Console
    from tests.helpers import compose_job

    monkeypatch.chdir(tmp_path)
    overrides = [
        "model=mlp",
        "scaling.num_workers=1",
        "trainer.max_steps=10",
        f"tracking.uri={mlflow_server.spec.url}",
        "tracking.experiment=deploy-job",
        "tracking.register_as=deploy-job",
        "tracking.register_alias=candidate",
        f"cluster.address={ray_cluster.address}",
    ]
    stream = io.StringIO()
    summary = run_job(compose_job(overrides, tmp_path), Console(stream), overrides)
    assert summary.outcome.status == "FINISHED"
    assert "registered the run's model as deploy-job version 1, alias candidate -> version 1" in stream.getvalue()
    client = MlflowClient(mlflow_server.spec.url)
    version = client.get_model_version_by_alias("deploy-job", "candidate")
    assert version.run_id == summary.run_id and version.tags[RUN_TAG] == summary.run_id
    run = client.get_run(summary.run_id)
    assert float(version.tags["eval/accuracy"]) == run.data.metrics["eval/accuracy"]
    downloaded = client.download_artifacts(summary.run_id, "config.yaml", str(tmp_path / "download"))
    with open(downloaded) as logged_config:  # the digest is of the resolved config the run holds
        assert version.tags[CONFIG_TAG] == hashlib.sha256(logged_config.read().encode()).hexdigest()
