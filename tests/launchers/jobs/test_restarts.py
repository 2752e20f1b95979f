"""Surviving failures on the real cluster: exact continuation after a SIGKILL (DDP and FSDP), a kill
mid-checkpoint, a hung rank, an exhausted restart budget, and resuming a run stopped with Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from launchers.jobs.job_runner import run_job
from orchestrator.cli.console import Console
from orchestrator.train.checkpoint import is_checkpoint
from tests.helpers import assert_no_job_resources, compose_job, owned_process, wait_until, worker_pid, worker_pids

# dropout makes the run depend on every rank's RNG stream, so exactness also proves the RNG restore
EXACT = [
    "model=mlp",
    "model.dropout=0.1",
    "trainer.max_steps=100",
    "trainer.log_every_n_steps=1",
    "checkpoint.every_n_steps=25",
    "tracking.log_model=false",
    "data.batch_size=16",
]


def _start(overrides, tmp_path):
    """Run the job on a thread of the test; returns (job, thread, holder of the summary)."""
    job = compose_job(overrides, tmp_path)
    holder: dict = {}
    thread = threading.Thread(
        target=lambda: holder.update(summary=run_job(job, Console(io.StringIO(), False))), name="test-job"
    )
    thread.start()
    return job, thread, holder


def _finish(thread, holder, timeout_s=300):
    thread.join(timeout=timeout_s)
    assert not thread.is_alive(), "the job did not end"
    return holder["summary"]


def _losses(job, run_id) -> dict[int, float]:
    from mlflow import MlflowClient

    history = MlflowClient(job.tracking.uri).get_metric_history(run_id, "train/loss")
    return {metric.step: metric.value for metric in sorted(history, key=lambda m: m.timestamp)}


def _tags(job, run_id) -> dict[str, str]:
    from mlflow import MlflowClient

    return MlflowClient(job.tracking.uri).get_run(run_id).data.tags


FSDP = [*EXACT, "scaling.strategy=fsdp"]


def _checkpoints(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("step_*") if is_checkpoint(path)) if directory.is_dir() else []


def _reference(overrides, tmp_path_factory):
    base = tmp_path_factory.mktemp("reference")
    job = compose_job(overrides, base)
    summary = run_job(job, Console(io.StringIO(), False))
    assert summary.outcome.status == "FINISHED"
    return summary, _losses(job, summary.run_id)


@pytest.fixture(scope="module")
def uninterrupted(ray_cluster, tmp_path_factory):
    """The reference: the same config, never interrupted."""
    return _reference(EXACT, tmp_path_factory)


@pytest.fixture(scope="module")
def uninterrupted_fsdp(ray_cluster, tmp_path_factory):
    """The FSDP reference: the same config sharded, never interrupted."""
    return _reference(FSDP, tmp_path_factory)


def _steps(directory: Path) -> list[int]:
    return [int(re.search(r"step_(\d+)", name).group(1)) for name in _checkpoints(directory)]


def _complete_once_gone(pids: list[int], runs: Path) -> list[int]:
    """The complete checkpoint steps on disk at the moment the processes `pids` are all gone.

    Listed in the same poll that sees the last one gone, so nothing they wrote is missed, and long
    before a replacement attempt (new processes that start, import torch and train) could add one.
    """
    seen: list[list[int]] = []
    wait_until(
        lambda: (
            not any(psutil.pid_exists(pid) for pid in pids)
            and not seen.append([step for run in runs.glob("*") for step in _steps(run)])
        ),
        120,
        f"processes {pids} to be gone",
    )
    return seen[-1]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_sigkill_of_a_worker_continues_bit_for_bit_from_the_checkpoint(strategy, request, ray_cluster, tmp_path):
    # ray_cluster is named here, not only through the reference: a cluster started inside the test body would
    # count as processes the test left behind
    overrides, reference_fixture = (EXACT, "uninterrupted") if strategy == "ddp" else (FSDP, "uninterrupted_fsdp")
    reference, reference_losses = request.getfixturevalue(reference_fixture)
    job, thread, holder = _start(overrides, tmp_path)
    runs = tmp_path / "checkpoints"
    wait_until(lambda: any(_checkpoints(d) for d in runs.glob("*")), 120, "a first checkpoint")
    seen: list = []
    wait_until(lambda: seen.append(worker_pid()) or seen[-1] is not None, 120, "a running worker")
    complete_at_kill = [step for run in runs.glob("*") for step in _steps(run)]
    killed_at = time.time()
    os.kill(seen[-1], signal.SIGKILL)
    summary = _finish(thread, holder)
    outcome = summary.outcome
    assert outcome.status == "FINISHED", outcome.error
    assert outcome.restarts == 1, _tags(job, summary.run_id)
    tags = _tags(job, summary.run_id)
    resumed = int(tags["restart.1.resumed_from_step"])
    # nothing complete at the kill is lost. The rank that survives may finish a write it had begun (a
    # newer checkpoint, equally valid); the weights below show the resume was exact either way
    assert resumed >= max(complete_at_kill) and tags["restart.1.kind"] == "worker died"
    assert float(tags["restart.1.first_step_at"]) > killed_at
    for rank, result in outcome.rank_results.items():
        assert result.params_digest == reference.outcome.rank_results[rank].params_digest
    for name, weight in outcome.result.model_state.items():
        assert torch.equal(weight, reference.outcome.result.model_state[name])
    losses = _losses(job, summary.run_id)
    after = [step for step in reference_losses if step > resumed]
    assert after and [losses[step] for step in after] == [reference_losses[step] for step in after]
    # workers.json keeps where the ranks of both attempts ran; the final digests belong to the last attempt
    from mlflow import MlflowClient

    table = json.loads(
        Path(
            MlflowClient(job.tracking.uri).download_artifacts(summary.run_id, "workers.json", str(tmp_path))
        ).read_text()
    )
    assert [(row["attempt"], row["rank"]) for row in table] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [row["params_digest"] for row in table[:2]] == [None, None]
    assert [row["params_digest"] for row in table[2:]] == [
        result.params_digest for _, result in sorted(outcome.rank_results.items())
    ]
    assert_no_job_resources()


def test_a_kill_during_an_asynchronous_save_resumes_from_the_previous_checkpoint(ray_cluster, tmp_path):
    # a big model makes each write take long enough to kill the ranks in the middle of it; every rank is
    # killed at once (a lost node), so no survivor can finish the write after the kill
    overrides = [
        "model=mlp",
        "model.hidden_sizes=[2048,2048]",
        "trainer.max_steps=40",
        "checkpoint.every_n_steps=10",
        "tracking.log_model=false",
        "checkpoint.keep_last=5",
    ]
    job, thread, holder = _start(overrides, tmp_path)
    runs = tmp_path / "checkpoints"

    def writing():
        for temporary in runs.glob("*/.step_*.tmp"):
            step = int(re.search(r"step_(\d+)", temporary.name).group(1))
            if step >= 20:
                return temporary
        return None

    pids: list = []
    wait_until(lambda: pids.append(worker_pids()) or len(pids[-1]) == 2, 120, "both ranks running")
    found: list = []
    wait_until(lambda: found.append(writing()) or found[-1] is not None, 120, "a checkpoint write in progress")
    for pid in pids[-1]:
        os.kill(pid, signal.SIGKILL)
    # what is complete once every rank is gone is what a restart may use. The write they were killed in
    # almost always stays incomplete; should the kill have landed just after its rename, that checkpoint
    # is complete and is the one to resume from, which the same assertion covers
    complete = _complete_once_gone(pids[-1], runs)
    assert complete
    summary = _finish(thread, holder)
    assert summary.outcome.status == "FINISHED", summary.outcome.error
    resumed = int(_tags(job, summary.run_id)["restart.1.resumed_from_step"])
    assert resumed == max(complete), "resume must take the last complete checkpoint"
    assert not list(runs.glob("*/.step_*.tmp")), "half-written files must not survive"
    assert_no_job_resources()


def test_a_hung_rank_is_detected_killed_and_replaced(ray_cluster, tmp_path):
    overrides = [
        "model=mlp",
        "trainer.max_steps=150",
        "checkpoint.every_n_steps=20",
        "tracking.log_model=false",
        "failure.hang_timeout_s=10",
        "scaling.rendezvous_timeout_s=60",
    ]
    job, thread, holder = _start(overrides, tmp_path)
    wait_until(lambda: any(_checkpoints(d) for d in (tmp_path / "checkpoints").glob("*")), 120, "a checkpoint")
    os.kill(worker_pid(), signal.SIGSTOP)  # alive but frozen: no death notice, only silence
    summary = _finish(thread, holder)
    assert summary.outcome.status == "FINISHED", summary.outcome.error
    tags = _tags(job, summary.run_id)
    assert tags["restart.1.kind"] == "hang" and "finished no step for" in tags["restart.1.reason"]
    assert_no_job_resources()


def test_when_restarts_run_out_the_run_fails_with_the_last_error(ray_cluster, tmp_path):
    from mlflow import MlflowClient

    overrides = [
        "model=mlp",
        "trainer.max_steps=1000000",
        "checkpoint.every_n_steps=20",
        "tracking.log_model=false",
        "failure.max_restarts=1",
        "checkpoint.keep_last=10",
    ]
    job, thread, holder = _start(overrides, tmp_path)
    runs = tmp_path / "checkpoints"
    for round_ in range(2):
        # kill only once this attempt trains: each round waits for a checkpoint the round before did not have
        wait_until(lambda: sum(len(_checkpoints(d)) for d in runs.glob("*")) > round_, 120, "training to go on")
        seen: list = []
        wait_until(lambda: seen.append(worker_pid()) or seen[-1] is not None, 120, "a running worker")
        os.kill(seen[-1], signal.SIGKILL)
        wait_until(lambda: worker_pid() != seen[-1] or not thread.is_alive(), 120, "the worker to be replaced")
    summary = _finish(thread, holder)
    outcome = summary.outcome
    assert outcome.status == "FAILED" and outcome.restarts == 1
    assert "gave up after 1 restarts (failure.max_restarts=1)" in outcome.error and "died" in outcome.error
    run = MlflowClient(job.tracking.uri).get_run(summary.run_id)
    assert run.info.status == "FAILED" and "gave up after 1 restarts" in run.data.tags["orchestrator.error"]
    assert_no_job_resources()


def test_a_run_stopped_with_ctrl_c_resumes_into_the_same_run_and_ends_identical(
    uninterrupted_fsdp, ray_cluster, tmp_path
):
    # under FSDP: the resume path is the same for both strategies, and the SIGKILL test above covers DDP's load
    from mlflow import MlflowClient

    reference, _ = uninterrupted_fsdp
    command = [
        sys.executable,
        "-m",
        "orchestrator",
        "train",
        *FSDP,
        "checkpoint.upload=true",
        f"cluster.address={ray_cluster.address}",
    ]
    with owned_process(command, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as first:
        runs = tmp_path / "checkpoints"
        wait_until(lambda: any(_checkpoints(d) for d in runs.glob("*")), 120, "a first checkpoint")
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
        assert first.returncode == 130
    second = subprocess.run(
        command + ["trainer.resume=latest"], cwd=tmp_path, text=True, capture_output=True, timeout=300
    )
    assert second.returncode == 0, second.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("orchestrator").experiment_id])
    assert run.info.status == "FINISHED" and "orchestrator.resumed_from" in run.data.tags
    # the second command's artifacts sit next to the first's, which are kept as they were
    assert {"console.log", "console.2.log", "workers.json", "workers.2.json"} <= {
        info.path for info in client.list_artifacts(run.info.run_id)
    }
    # checkpoint.upload=true: each complete sharded checkpoint is in the run's artifacts, folder and all
    uploaded = {info.path for info in client.list_artifacts(run.info.run_id, "checkpoints/step_000000100")}
    assert {"checkpoints/step_000000100/.metadata", "checkpoints/step_000000100/trainer.pt"} <= uploaded
    workers = client.download_artifacts(run.info.run_id, "workers.2.json", str(tmp_path))
    import json

    digests = {worker["rank"]: worker["params_digest"] for worker in json.loads(Path(workers).read_text())}
    assert digests == {rank: result.params_digest for rank, result in reference.outcome.rank_results.items()}
    assert_no_job_resources()
