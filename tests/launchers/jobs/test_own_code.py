"""The user's own model, data set (PNG files on disk) and loss through the whole path on a real Ray
cluster, with the user's package in a folder outside the repository."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from launchers.jobs.job_runner import run_job
from orchestrator.cli.commands import main
from orchestrator.cli.console import Console
from orchestrator.train.checkpoint import load_checkpoint
from tests.helpers import assert_no_job_resources, compose_job, job_resources_left, wait_until, worker_pid
from tests.own_code import own_overrides, user_package

# dropout: exactness needs every rank's RNG stream restored; a loader process: its position must be too
EXACT = [
    "trainer.max_steps=60",
    "trainer.log_every_n_steps=1",
    "checkpoint.every_n_steps=10",
    "tracking.log_model=false",
    "data.num_workers=1",
]


@pytest.fixture
def package(tmp_path, monkeypatch):
    """The user's folder as their working directory: the CLI puts it on the driver's sys.path (as `python -m`
    does), and Ray puts the driver's working directory on its workers' sys.path."""
    folder = user_package(tmp_path / "user")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)
    return folder


def _losses(job, run_id) -> dict[int, float]:
    from mlflow import MlflowClient

    history = MlflowClient(job.tracking.uri).get_metric_history(run_id, "train/loss")
    return {metric.step: metric.value for metric in history}


def test_own_code_trains_from_the_cli_is_recorded_and_the_logged_model_predicts(
    ray_cluster, package, tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    db = tmp_path / "runs.db"
    command = [
        str(Path(sys.executable).parent / "orchestrator"),
        "train",
        *own_overrides(package),
        "trainer.max_steps=30",
        f"cluster.address={ray_cluster.address}",
        f"tracking.uri=sqlite:///{db}",
    ]
    # run from the user's folder by the console script, whose sys.path does not hold the working directory
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(command, cwd=package, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "model: digitpng.nets.DigitNet, " in done.stdout and "1,437 train samples, 360 eval samples" in done.stdout

    client = MlflowClient(f"sqlite:///{db}")
    [run] = client.search_runs([client.get_experiment_by_name("orchestrator").experiment_id])
    from digitpng.data import build
    from digitpng.nets import DigitNet

    model = DigitNet(width=8, dropout=0.1)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.num_parameters"] == str(sum(p.numel() for p in model.parameters()))
    assert (
        run.data.params["model.target"] == "digitpng.nets.DigitNet"
        and run.data.params["loss.kwargs.smoothing"] == "0.05"
    )
    metrics = run.data.metrics
    assert metrics["eval/accuracy"] > 0.3 and "eval/loss" in metrics and metrics["train/model_tflops"] > 0

    _, evaluation = build(root=str(package / "pngs"))
    inputs = torch.stack([evaluation[index][0] for index in range(8)])
    import mlflow.pytorch

    # loading a pt2 model sets TORCHINDUCTOR_CACHE_DIR; owning it here lets monkeypatch restore it afterwards
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    mlflow.set_tracking_uri(f"sqlite:///{db}")
    try:
        logged = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path / "model"))
    finally:
        mlflow.set_tracking_uri(None)
    checkpoints = sorted((package / "checkpoints").glob("*/step_*"))
    state = load_checkpoint(checkpoints[-1])
    assert state["step"] == 30
    model.load_state_dict(state["model"])
    with torch.no_grad():
        assert torch.allclose(logged(inputs), model.eval()(inputs), atol=1e-6)


def test_sigkill_of_a_worker_with_own_code_continues_bit_for_bit(ray_cluster, package, tmp_path):
    overrides = [*own_overrides(package), *EXACT]
    reference_job = compose_job(overrides, tmp_path / "reference")
    reference = run_job(reference_job, Console(io.StringIO(), False))
    assert reference.outcome.status == "FINISHED", reference.outcome.error

    job = compose_job(overrides, tmp_path / "killed")
    holder: dict = {}
    thread = threading.Thread(
        target=lambda: holder.update(summary=run_job(job, Console(io.StringIO(), False))), name="test-job"
    )
    thread.start()
    runs = tmp_path / "killed" / "checkpoints"
    wait_until(lambda: any(runs.glob("*/step_*")), 180, "a first checkpoint")
    seen: list = []
    wait_until(lambda: seen.append(worker_pid()) or seen[-1] is not None, 120, "a running worker")
    os.kill(seen[-1], signal.SIGKILL)
    thread.join(timeout=400)
    assert not thread.is_alive(), "the job did not end"
    outcome = holder["summary"].outcome
    assert outcome.status == "FINISHED", outcome.error
    assert outcome.restarts == 1
    for rank, result in outcome.rank_results.items():
        assert result.params_digest == reference.outcome.rank_results[rank].params_digest
    losses, expected = _losses(job, holder["summary"].run_id), _losses(reference_job, reference.run_id)
    assert sorted(losses) == list(range(1, 61)) and losses == expected
    assert_no_job_resources()


def test_a_bad_target_exits_2_before_ray_is_touched(ray_cluster, package, monkeypatch, capsys):
    overrides = [o.replace("DigitNet", "DigitNett") for o in own_overrides(package)]
    code = main(["train", *overrides, f"cluster.address={ray_cluster.address}"])
    assert code == 2
    assert (
        "model._target_=digitpng.nets.DigitNett is not valid: digitpng.nets has no attribute DigitNett "
        "(did you mean DigitNet?)" in capsys.readouterr().err
    )
    assert job_resources_left() == ([], [])
    assert not (package / "mlflow.db").exists() and not (package / "outputs").exists()


def test_a_sweep_of_own_code_records_every_trials_objective(ray_cluster, package, tmp_path):
    from mlflow import MlflowClient

    db = tmp_path / "runs.db"
    command = [
        str(Path(sys.executable).parent / "orchestrator"),
        "train",
        "-m",
        *own_overrides(package),
        "optim.lr=0.01,0.1",
        "trainer.max_steps=8",
        "tracking.log_model=false",
        "monitor.enabled=false",
        f"cluster.address={ray_cluster.address}",
        f"tracking.uri=sqlite:///{db}",
        "tracking.experiment=own-sweep",
    ]
    done = subprocess.run(command, cwd=package, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("own-sweep").experiment_id])
    trials = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    [parent] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert sorted(run.data.params["optim.lr"] for run in trials) == ["0.01", "0.1"]
    objectives = [run.data.metrics["eval/accuracy"] for run in trials]
    assert all(0 < value <= 1 for value in objectives) and parent.data.metrics["sweep/finished"] == 2
    assert parent.data.metrics["sweep/best_objective"] == max(objectives)


def test_a_step_fn_on_dict_items_trains_on_ray_and_records_its_own_metrics(ray_cluster, package, tmp_path):
    from mlflow import MlflowClient

    job = compose_job(
        [
            *own_overrides(package, "+data.as_dicts=true", "trainer.step_fn=digitpng.steps.classify"),
            "trainer.max_steps=20",
            "trainer.log_every_n_steps=5",
        ],
        tmp_path,
    )
    err = io.StringIO()
    summary = run_job(job, Console(err, False))
    assert summary.outcome.status == "FINISHED", summary.outcome.error
    client = MlflowClient(job.tracking.uri)
    run = client.get_run(summary.run_id)
    assert {"train/accuracy", "train/confidence", "eval/loss", "eval/accuracy", "eval/confidence"} <= set(
        run.data.metrics
    )
    assert [m.step for m in client.get_metric_history(summary.run_id, "train/accuracy")] == [5, 10, 15, 20]
    assert "the trained model is not logged to MLflow: its inputs are unknown" in err.getvalue()
    assert_no_job_resources()
