"""Nothing of an earlier run is changed by a later command: a finished run is never reopened unless
extended, a checkpoint of another model is refused before Ray starts, a branch gets a run and a folder
of its own, and a resumed run keeps every command's artifacts."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest

from launchers.jobs.job_runner import run_job
from orchestrator.cli.console import Console
from orchestrator.errors import ConfigError
from orchestrator.train.folder_lock import LOCK_NAME, FolderInUse
from tests.helpers import assert_no_job_resources, compose_job, job_resources_left

BASE = [
    "model=mlp",
    "trainer.max_steps=20",
    "checkpoint.every_n_steps=10",
    "checkpoint.keep_last=5",
    "tracking.log_model=false",
    "monitor.enabled=false",
]


@pytest.fixture
def finished(ray_cluster, tmp_path):
    """A FINISHED 20-step run with checkpoints at steps 10 and 20: (job, run id, client)."""
    from mlflow import MlflowClient

    job = compose_job(BASE, tmp_path)
    summary = run_job(job, Console(io.StringIO(), False))
    assert summary.outcome.status == "FINISHED", summary.outcome.error
    return job, summary.run_id, MlflowClient(job.tracking.uri)


def _snapshot(client, run_id, folder: Path):
    run = client.get_run(run_id)
    files = {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}
    return run.info.status, run.info.end_time, {a.path for a in client.list_artifacts(run_id)}, files


def test_a_finished_run_is_not_resumed_unless_extended_and_a_wrong_model_is_refused(finished, tmp_path):
    job, run_id, client = finished
    folder = tmp_path / "checkpoints" / run_id
    before = _snapshot(client, run_id, folder)
    for overrides, expected in [
        (
            [*BASE, "trainer.resume=latest"],
            f"MLflow run {run_id} FINISHED at step 20, and a finished run is never changed by a later command",
        ),
        (
            [*BASE, "model=cnn", "trainer.max_steps=30", "trainer.resume=latest"],
            "model.name: mlp in the checkpoint, cnn now",
        ),
    ]:
        with pytest.raises(ConfigError) as refused:
            run_job(compose_job(overrides, tmp_path), Console(io.StringIO(), False))
        assert expected in str(refused.value)
        assert job_resources_left() == ([], [])
    assert _snapshot(client, run_id, folder) == before  # status, end time, artifacts and checkpoints untouched

    extended = run_job(
        compose_job([*BASE, "trainer.max_steps=30", "trainer.resume=latest"], tmp_path), Console(io.StringIO(), False)
    )
    assert extended.outcome.status == "FINISHED" and extended.run_id == run_id
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"console.log", "console.2.log", "workers.json", "workers.2.json", "config.yaml"} <= artifacts
    assert client.get_run(run_id).data.tags["orchestrator.sessions"] == "2"
    names = {p.name for p in folder.iterdir()}  # with the epoch's end (step 23) in between
    assert {f"step_{s:09d}" for s in (10, 20, 30)} <= names and before[3].keys() <= names
    assert_no_job_resources()


def test_a_resume_from_an_older_checkpoint_branches_into_a_new_run_and_folder(finished, tmp_path):
    job, run_id, client = finished
    folder = tmp_path / "checkpoints" / run_id
    before = _snapshot(client, run_id, folder)
    branch = run_job(
        compose_job([*BASE, f"trainer.resume={folder / 'step_000000010'}"], tmp_path), Console(io.StringIO(), False)
    )
    assert branch.outcome.status == "FINISHED" and branch.run_id != run_id
    assert _snapshot(client, run_id, folder) == before
    assert client.get_run(branch.run_id).data.tags["orchestrator.resumed_from"] == str(folder / "step_000000010")
    branch_folder = tmp_path / "checkpoints" / branch.run_id  # locked while the branch trained in it
    assert sorted(p.name for p in branch_folder.iterdir()) == [LOCK_NAME, "step_000000020"]
    assert_no_job_resources()


def test_a_folder_another_command_trains_in_is_not_resumed_into(finished, tmp_path):
    job, run_id, client = finished
    folder = tmp_path / "checkpoints" / run_id
    hold = (
        "import sys; from pathlib import Path; from orchestrator.train.folder_lock import holding\n"
        "with holding(Path(sys.argv[1]), 'train'):\n    print('held', flush=True); sys.stdin.read()\n"
    )
    other = subprocess.Popen(
        [sys.executable, "-c", hold, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "held"
        before = _snapshot(client, run_id, folder)
        with pytest.raises(FolderInUse) as refused:
            run_job(
                compose_job([*BASE, "trainer.max_steps=30", "trainer.resume=latest"], tmp_path),
                Console(io.StringIO(), False),
            )
        assert f"{folder} is in use by another command (PID {other.pid}" in str(refused.value)
        assert job_resources_left() == ([], [])
        assert _snapshot(client, run_id, folder) == before
    finally:
        other.kill()
        other.wait(timeout=30)
