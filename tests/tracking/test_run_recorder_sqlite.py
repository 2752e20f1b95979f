"""The run recorder on a local SQLite store: shared by threads and processes, long values, secrets, parents."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from orchestrator.config.schema import TrackingConfig
from orchestrator.tracking.run_recorder import PARENT_TAG, RunRecorder

REPO = Path(__file__).resolve().parents[2]
STEPS = 60


def record_runs(uri: str, label: str, count: int) -> list[str]:
    """`count` runs at once, one thread each, every one logging STEPS steps; returns the problems seen."""
    problems: list[str] = []

    def one_run(index: int) -> None:
        try:
            recorder = RunRecorder.create(
                TrackingConfig(uri=uri, experiment="shared"),
                {"label": label, "index": str(index)},
                {"orchestrator.sweep": label},
                notify=problems.append,
            )
            for step in range(1, STEPS + 1):
                recorder.log_metrics({"train/loss": 1.0 / step, "train/lr": 0.1, "train/epoch": 0.0}, step)
            recorder.log_text(f"{label}-{index}", "note.txt")
            recorder.flush()
            recorder.finish("FINISHED")
        except Exception as error:  # reported to the test, which fails on any
            problems.append(f"{label}-{index}: {type(error).__name__}: {error}")

    threads = [threading.Thread(target=one_run, args=(index,), name=f"test-run-{index}") for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return problems


def _worker_process(uri: str, label: str) -> subprocess.Popen:
    """A process that imports everything, says `ready`, and records its runs once told `go`."""
    code = (
        "import sys, mlflow; from tests.tracking.test_run_recorder_sqlite import record_runs; "
        "print('ready', flush=True); sys.stdin.readline(); "
        f"problems = record_runs({uri!r}, {label!r}, 2); print(problems); sys.exit(1 if problems else 0)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_runs_in_threads_and_processes_share_one_fresh_sqlite_file(tmp_path):
    """Three processes with two runs each start together on a database file that does not exist yet."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    labels = [f"process-{number}" for number in range(3)]
    processes = [_worker_process(uri, label) for label in labels]
    for process in processes:
        assert process.stdout.readline().strip() == "ready", process.communicate()[1][-3000:]
    for process in processes:  # all at once: the first use of the file (schema migration) races without a lock
        process.stdin.write("go\n")
        process.stdin.flush()
    outputs = [process.communicate(timeout=300) for process in processes]
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0, f"{out}\n{err[-3000:]}"

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("shared").experiment_id])
    assert sorted((run.data.params["label"], run.data.params["index"]) for run in runs) == [
        (label, index) for label in labels for index in ("0", "1")
    ]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "train/loss")
        assert sorted(metric.step for metric in history) == list(range(1, STEPS + 1))


def test_long_values_are_cut_to_mlflow_limits_and_secret_keys_never_logged(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sizes = json.dumps(list(range(3000)))  # a long list override, as flat_params renders it
    params = {
        "model.hidden_sizes": sizes,
        "optim.lr": "0.1",
        "db.password": "hunter2",
        "api_token": "t0k3n",
        "store": "postgresql://mlflow:hunter2@db:5432/mlflow",
    }
    tags = {"orchestrator.overrides": "x=" + "y" * 9000, "AWS_SECRET_ACCESS_KEY": "abc123secret"}
    recorder = RunRecorder.create(TrackingConfig(uri=uri, experiment="limits"), params, tags)
    recorder.set_tags({"hf_token": "t0k3n", "orchestrator.note": "ok"})
    recorder.finish("FAILED", error="could not connect to postgresql://mlflow:hunter2@db:5432/mlflow")

    client = MlflowClient(uri)
    run = client.get_run(recorder.run_id)
    assert len(run.data.params["model.hidden_sizes"]) == 6000
    assert run.data.params["model.hidden_sizes"].startswith("[0, 1, 2,")
    assert run.data.params["model.hidden_sizes"].endswith("...[truncated]")
    assert len(run.data.tags["orchestrator.overrides"]) == 8000
    assert run.data.params["store"] == "postgresql://mlflow:***@db:5432/mlflow"
    assert set(run.data.params) == {"model.hidden_sizes", "optim.lr", "store"}
    assert "hf_token" not in run.data.tags and "AWS_SECRET_ACCESS_KEY" not in run.data.tags
    error_text = Path(client.download_artifacts(recorder.run_id, "error.txt", str(tmp_path))).read_text()
    recorded = [*run.data.params.values(), *run.data.tags.values(), error_text]
    assert not [text for text in recorded if "hunter2" in text or "t0k3n" in text or "abc123secret" in text]
    assert run.data.tags["orchestrator.error"] == "could not connect to postgresql://mlflow:***@db:5432/mlflow"


def test_a_child_run_names_its_parent_and_a_run_can_be_continued_by_id(tmp_path):
    from mlflow import MlflowClient

    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="sweep")
    parent = RunRecorder.create(tracking, {}, {"orchestrator.sweep_id": "s1"})
    child = RunRecorder.create(tracking, {"optim.lr": "0.1"}, {}, parent_run_id=parent.run_id)
    child.log_metrics({"train/loss": 2.0}, 10)
    child.flush()
    child.finish("KILLED", error="interrupted by the user")
    resumed = RunRecorder.attach(tracking, child.run_id)
    client = MlflowClient(tracking.uri)
    assert client.get_run(child.run_id).info.status == "RUNNING"
    resumed.log_metrics({"train/loss": 1.0}, 20)
    resumed.flush()
    resumed.finish("FINISHED")
    parent.finish("FINISHED")

    run = client.get_run(child.run_id)
    assert run.data.tags[PARENT_TAG] == parent.run_id and run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(child.run_id, "train/loss")] == [(10, 2.0), (20, 1.0)]
