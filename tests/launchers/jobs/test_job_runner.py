"""Jobs on the session's real Ray cluster, recorded in a real MLflow store on disk."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import threading

import pytest
import torch

from launchers.jobs.job_runner import run_job
from orchestrator.cli.console import Console
from orchestrator.config.export import flat_params
from orchestrator.train.folder_lock import LOCK_NAME
from tests.helpers import assert_no_job_resources, compose_job, wait_until, worker_pid


def _run(overrides, tmp_path):
    job = compose_job(overrides, tmp_path)
    return job, run_job(job, Console(io.StringIO(), interactive=False), overrides)


def _client(job):
    from mlflow import MlflowClient

    return MlflowClient(job.tracking.uri)


def _git_checkout(path):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    path.mkdir()
    subprocess.run(git + ["init", "-q"], cwd=path, check=True)
    subprocess.run(git + ["commit", "-q", "--allow-empty", "-m", "start"], cwd=path, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True).stdout.strip()


def test_a_small_job_trains_is_recorded_and_releases_its_actors(ray_cluster, tmp_path, monkeypatch):
    commit = _git_checkout(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "project")
    job, summary = _run(["model=mlp", "trainer.max_epochs=2", "tracking.log_model=false"], tmp_path)
    outcome = summary.outcome
    assert outcome.status == "FINISHED", outcome.error
    assert outcome.result.metrics["eval/accuracy"] > 0.8
    assert sorted(outcome.rank_results) == [0, 1]
    assert len({result.params_digest for result in outcome.rank_results.values()}) == 1
    run = _client(job).get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    # one duration: the console's `run FINISHED in X s` is the run's end minus its start in MLflow
    assert abs((run.info.end_time - run.info.start_time) / 1000 - summary.duration_s) <= 0.002
    assert run.data.params == flat_params(job)
    assert run.data.tags["orchestrator.world_size"] == "2" and run.data.tags["orchestrator.backend"] == "gloo"
    assert run.data.tags["mlflow.source.git.commit"] == commit
    assert run.data.tags["orchestrator.overrides"] == "model=mlp trainer.max_epochs=2 tracking.log_model=false"
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints" / summary.run_id).iterdir())
    assert checkpoints == [LOCK_NAME, f"step_{outcome.result.step // 2:09d}", f"step_{outcome.result.step:09d}"]
    assert re.fullmatch(r"orchestrator-[0-9a-f]{12}", run.data.tags["orchestrator.ray_name"])
    assert_no_job_resources()


def test_a_run_record_that_cannot_open_fails_the_job_and_leaves_no_workers(ray_cluster, tmp_path):
    from mlflow.exceptions import MlflowException

    # the workers start while the run record opens: a store that refuses the run must not strand them
    job = compose_job(["model=mlp", "tracking.experiment=gone"], tmp_path)
    client = _client(job)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(MlflowException, match="active"):
        run_job(job, Console(io.StringIO(), interactive=False))
    assert_no_job_resources()


def test_two_workers_match_one_worker_with_twice_the_batch(ray_cluster, tmp_path):
    common = ["model=mlp", "trainer.max_steps=6", "trainer.log_every_n_steps=1", "tracking.log_model=false"]
    two_job, two = _run(common + ["scaling.num_workers=2", "data.batch_size=16"], tmp_path / "two")
    one_job, one = _run(common + ["scaling.num_workers=1", "data.batch_size=32"], tmp_path / "one")
    assert two.outcome.status == one.outcome.status == "FINISHED"
    losses = [
        [m.value for m in _client(job).get_metric_history(summary.run_id, "train/loss")]
        for job, summary in ((two_job, two), (one_job, one))
    ]
    assert len(losses[0]) == 6 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    for name, weight in two.outcome.result.model_state.items():
        torch.testing.assert_close(weight, one.outcome.result.model_state[name], rtol=1e-5, atol=1e-6)
    assert two.outcome.rank_results[0].params_digest == two.outcome.rank_results[1].params_digest


def test_an_exception_on_a_rank_fails_the_run_with_its_traceback(ray_cluster, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("checkpoints cannot go below a regular file")
    overrides = ["model=mlp", "trainer.max_epochs=1", f"checkpoint.dir={blocker}/ckpt", "failure.max_restarts=0"]
    job, summary = _run(overrides, tmp_path)
    assert summary.outcome.status == "FAILED"
    assert summary.outcome.error.startswith("rank 0 on ")
    # rank 0 prepares the checkpoint folder when the attempt starts
    assert "NotADirectoryError" in summary.outcome.error and "sharded_checkpoint.py" in summary.outcome.traceback
    run = _client(job).get_run(summary.run_id)
    assert run.info.status == "FAILED"
    assert "sharded_checkpoint.py" in run.data.tags["orchestrator.error"]
    assert_no_job_resources()


def test_a_killed_worker_process_fails_the_run_and_nothing_is_left(ray_cluster, tmp_path):
    job = compose_job(
        ["model=mlp", "trainer.max_steps=1000000", "tracking.log_model=false", "failure.max_restarts=0"], tmp_path
    )
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(summary=run_job(job, Console(io.StringIO(), False))))
    runner.start()

    seen: list = []
    wait_until(lambda: seen.append(worker_pid()) or seen[-1] is not None, 60, "a worker of the job to run")
    os.kill(seen[-1], signal.SIGKILL)
    runner.join(timeout=120)
    assert not runner.is_alive()
    summary = outcome["summary"]
    assert summary.outcome.status == "FAILED" and re.match(r"rank \d on [\d.]+ died", summary.outcome.error)
    assert _client(job).get_run(summary.run_id).info.status == "FAILED"
    assert_no_job_resources()


def test_an_fsdp_job_logs_the_whole_model_which_loads_without_the_orchestrator(ray_cluster, tmp_path, monkeypatch):
    import mlflow

    from orchestrator.config.schema import TokensConfig
    from orchestrator.train.data import load_dataset
    from orchestrator.train.evaluate import token_loss

    overrides = [
        "model=gpt",
        "data=tokens",
        "model.layers=2",
        "model.width=32",
        "model.heads=2",
        "model.context=16",
        "data.seq_len=16",
        "data.vocab_size=64",
        "data.num_sequences=256",
        "trainer.max_steps=12",
        "scaling.strategy=fsdp",
        "checkpoint.upload=true",
    ]
    job, summary = _run(overrides, tmp_path)
    assert summary.outcome.status == "FINISHED", summary.outcome.error
    client = _client(job)
    run = client.get_run(summary.run_id)
    assert run.data.params["scaling.strategy"] == "fsdp"
    assert {"memory/rank0/model_state_mib", "memory/rank1/model_state_mib", "checkpoint/blocked_s"} <= set(
        run.data.metrics
    )
    uploaded = {info.path for info in client.list_artifacts(summary.run_id, "checkpoints/step_000000012")}
    assert "checkpoints/step_000000012/.metadata" in uploaded
    # the logged model is the whole model: plain torch computes the run's own eval/loss with it
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    mlflow.set_tracking_uri(job.tracking.uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{summary.run_id}/model", dst_path=str(tmp_path / "model"))
    finally:
        mlflow.set_tracking_uri(None)
    data = load_dataset(TokensConfig(num_sequences=256, seq_len=16, vocab_size=64), seed=0)
    with torch.no_grad():
        loss = token_loss(model(data.test_x), data.test_y).item()
    assert loss == pytest.approx(run.data.metrics["eval/loss"], rel=1e-4)
    assert_no_job_resources()
