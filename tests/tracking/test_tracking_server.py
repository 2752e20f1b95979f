"""Jobs against a real `mlflow server` over HTTP, read back through MlflowClient; an outage mid-run."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from launchers.jobs.job_runner import run_job
from orchestrator.cli.commands import main
from orchestrator.cli.console import Console
from orchestrator.tracking.mlflow_server import MlflowServer, free_port, local_spec
from tests.helpers import compose_job, job_resources_left, wait_until

SECRET = "hunter2-from-the-environment"


def _artifact_paths(client, run_id, path=None) -> list[str]:
    paths = []
    for item in client.list_artifacts(run_id, path):
        paths.extend(_artifact_paths(client, run_id, item.path) if item.is_dir else [item.path])
    return paths


def _run_ids(client, experiment: str) -> list[str]:
    found = client.get_experiment_by_name(experiment)
    return [run.info.run_id for run in client.search_runs([found.experiment_id])] if found else []


def _steps(client, run_id, key) -> list[int]:
    return sorted(metric.step for metric in client.get_metric_history(run_id, key))


def test_a_job_logs_to_the_server_over_http_and_everything_reads_back(ray_cluster, mlflow_server, tmp_path):
    from mlflow import MlflowClient

    url = mlflow_server.spec.url
    overrides = [
        "model=mlp",
        "trainer.max_steps=40",
        "trainer.log_every_n_steps=5",
        "tracking.model_format=pickle",
        f"tracking.uri={url}",
        "tracking.experiment=over-http",
        f"cluster.address={ray_cluster.address}",
    ]
    # a client login in the environment (this server ignores it) must not end up in the run
    env = dict(os.environ, MLFLOW_TRACKING_USERNAME="alice", MLFLOW_TRACKING_PASSWORD=SECRET)
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "train", *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    run_id = re.search(r"MLflow run: ([0-9a-f]{32})", done.stdout).group(1)
    assert f"open it: {url}/#/experiments/" in done.stdout

    client = MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == "mlp" and run.data.params["tracking.uri"] == url
    assert run.data.tags["orchestrator.overrides"] == " ".join(overrides)
    assert _steps(client, run_id, "train/loss") == list(range(5, 41, 5))
    assert _steps(client, run_id, "eval/accuracy")[-1] == 40

    paths = _artifact_paths(client, run_id)
    assert {"config.yaml", "console.log", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= set(
        paths
    )
    texts = {
        path: Path(client.download_artifacts(run_id, path, str(tmp_path / "download"))).read_text() for path in paths
    }
    assert "- trainer.max_steps=40" in texts[".hydra/overrides.yaml"]
    console_log = texts["console.log"]
    assert re.search(r"epoch \d+ \| step 40/40 \| loss [\d.]+", console_log)
    assert "run FINISHED in" in console_log and f"MLflow run: {run_id}" in console_log
    # served through the server: the files sit in its artifacts destination, not beside the job
    served = list(Path(mlflow_server.spec.artifacts_destination).rglob("console.log"))
    assert any(run_id in str(path) for path in served)
    [model] = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert model.source_run_id == run_id

    recorded = [*run.data.params.values(), *run.data.tags.values(), *run.data.params, *run.data.tags, *texts.values()]
    assert not [text for text in recorded if SECRET in text]


def test_every_metric_step_survives_a_server_outage_mid_run(ray_cluster, tmp_path):
    """Kill the server (by PID) after the first metrics, restart it on the same port and store later."""
    from mlflow import MlflowClient

    mlflow_server = MlflowServer(local_spec(tmp_path / "server", port=free_port()), log_path=tmp_path / "server.log")
    mlflow_server.start()
    job = compose_job(
        [
            "model=mlp",
            "data=synthetic",
            "trainer.max_steps=300",
            "trainer.log_every_n_steps=5",
            "tracking.log_model=false",
            f"tracking.uri={mlflow_server.spec.url}",
            "tracking.experiment=outage",
            "tracking.flush_timeout_s=180",
        ],
        tmp_path,
    )
    stream = io.StringIO()
    outcome = {}
    runner = threading.Thread(
        target=lambda: outcome.update(summary=run_job(job, Console(stream, interactive=True))), name="test-job"
    )

    def progress() -> int:
        steps = re.findall(r"step (\d+)/300", stream.getvalue())
        return int(steps[-1]) if steps else 0

    client = MlflowClient(mlflow_server.spec.url)
    runner.start()
    try:
        wait_until(lambda: _run_ids(client, "outage"), 120, "the job's run to exist")
        [run_id] = _run_ids(client, "outage")
        wait_until(lambda: len(client.get_metric_history(run_id, "train/loss")) >= 3, 120, "metrics on the server")
        mlflow_server.kill()
        killed_at = progress()
        assert killed_at < 300, "the job ended before the server went down"
        wait_until(lambda: progress() >= min(killed_at + 100, 300), 120, "training to go on while the server is down")
        mlflow_server.start()  # same port, same store: what a restarted server looks like to the job
        runner.join(timeout=300)
        assert not runner.is_alive()
        summary = outcome["summary"]
        assert summary.outcome.status == "FINISHED", summary.outcome.error
        assert client.get_run(run_id).info.status == "FINISHED"
        assert _steps(client, run_id, "train/loss") == list(range(5, 301, 5))
        assert _steps(client, run_id, "train/samples_per_s") == list(range(5, 301, 5))
        assert _steps(client, run_id, "eval/accuracy")[-1] == 300
    finally:
        runner.join(timeout=300)
        mlflow_server.stop()
    console = stream.getvalue()
    assert "MLflow: cannot write metrics" in console and "retrying for up to 300 s" in console
    assert re.search(r"MLflow: reachable again after \d+ s; no metric value was lost", console)
    assert "not recorded" not in console and "dropped" not in console


def test_an_unreachable_server_fails_before_the_cluster_is_touched(ray_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"
    code = main(["train", f"tracking.uri={url}", f"cluster.address={ray_cluster.address}"])
    assert code == 2
    err = capsys.readouterr().err
    assert f"the MLflow tracking server at tracking.uri={url} is not reachable" in err
    assert "start one with `orchestrator mlflow-server`" in err
    assert job_resources_left() == ([], [])


def test_a_password_in_the_tracking_uri_is_refused_and_not_echoed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", f"tracking.uri=http://alice:{SECRET}@127.0.0.1:5000"]) == 2
    err = capsys.readouterr().err
    assert "tracking.uri=http://alice:***@127.0.0.1:5000 is not valid: credentials do not belong in the config" in err
    assert "MLFLOW_TRACKING_PASSWORD" in err and SECRET not in err
