"""A cluster started with `ray start --head` (token authentication on): submit, auth errors, ray://."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import kill_trees, wait_until

VENV_BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(head: dict, **changes) -> dict[str, str]:
    """The environment of a client of `head`: its token, and `changes` (None removes a variable)."""
    env = {**os.environ, **head["auth"], "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.fixture(scope="module")
def token_head(ray_token_env):
    """`ray start --head --block` in the foreground: terminating it by PID stops what it started."""
    # every port chosen free: Ray's defaults (6379, 8265, 52365, ...) collide with any other cluster here
    names = ["gcs", "dashboard", "client", "agent-listen", "agent-grpc", "runtime-env", "metrics"]
    ports = {name: _free_port() for name in names}
    temp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    log = temp / "head.log"
    head = subprocess.Popen(
        [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={ports['gcs']}",
            f"--dashboard-port={ports['dashboard']}",
            f"--ray-client-server-port={ports['client']}",
            f"--dashboard-agent-listen-port={ports['agent-listen']}",
            f"--dashboard-agent-grpc-port={ports['agent-grpc']}",
            f"--runtime-env-agent-port={ports['runtime-env']}",
            f"--metrics-export-port={ports['metrics']}",
            "--include-dashboard=true",
            "--num-cpus=2",
            f"--temp-dir={temp}",
            "--disable-usage-stats",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=_env({"auth": ray_token_env}),
    )
    try:
        wait_until(lambda: "Ray runtime started" in log.read_text() or head.poll() is not None, 120, "the Ray head")
        assert head.poll() is None, log.read_text()[-2000:]
        yield {**ports, "logs": temp / "session_latest" / "logs", "auth": ray_token_env}
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        finally:
            kill_trees([head])  # what a head that did not stop in time left running


def _orchestrator(args, cwd: Path, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400
    )


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    (project / "fail.py").write_text("import sys\nprint('about to fail')\nsys.exit(3)\n")
    return project


def test_submit_streams_the_logs_and_exits_with_the_jobs_status(token_head, tmp_path):
    from mlflow import MlflowClient

    project, store = _project(tmp_path), f"sqlite:///{tmp_path}/mlflow.db"
    address = f"http://127.0.0.1:{token_head['dashboard']}"
    done = _orchestrator(
        [
            "submit",
            "--address",
            address,
            "model=mlp",
            "trainer.max_steps=5",
            "tracking.log_model=false",
            f"tracking.uri={store}",
        ],
        project,
        _env(token_head),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run FINISHED" in done.stdout and re.search(r"job raysubmit_\w+ SUCCEEDED", done.stdout)
    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("orchestrator").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["cluster.address"] == "auto"

    failing = _orchestrator(
        [
            "submit",
            "--address",
            address,
            "entrypoint=script",
            "script.path=fail.py",
            "scaling.num_workers=1",
            f"tracking.uri={store}",
        ],
        project,
        _env(token_head),
    )
    assert failing.returncode == 1 and "about to fail" in failing.stdout
    assert re.search(r"job raysubmit_\w+ FAILED", failing.stdout)


def _job_status(head: dict, submission_id: str) -> str:
    """The job's status from the Jobs REST API, authenticated like any client of a token cluster."""
    address = f"http://127.0.0.1:{head['dashboard']}"
    token = Path(head["auth"]["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    request = urllib.request.Request(
        f"{address}/api/jobs/{submission_id}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["status"]


def test_submit_no_wait_prints_the_submission_id(token_head, tmp_path):
    address = f"http://127.0.0.1:{token_head['dashboard']}"
    project = _project(tmp_path)
    started = _orchestrator(
        [
            "submit",
            "--address",
            address,
            "--no-wait",
            "entrypoint=script",
            "script.path=fail.py",
            "scaling.num_workers=1",
            "tracking.enabled=false",
        ],
        project,
        _env(token_head),
    )
    assert started.returncode == 0
    submission_id = started.stdout.strip()
    assert re.fullmatch(r"raysubmit_\w+", submission_id)
    wait_until(
        lambda: _job_status(token_head, submission_id) in ("FAILED", "SUCCEEDED"), 120, "the submitted job to end"
    )
    assert _job_status(token_head, submission_id) == "FAILED"


def test_a_missing_or_wrong_token_says_how_to_provide_it(token_head, tmp_path):
    missing = _orchestrator(
        ["train", f"cluster.address=127.0.0.1:{token_head['gcs']}", "model=mlp"],
        tmp_path,
        _env(token_head, RAY_AUTH_MODE=None),
    )
    assert missing.returncode == 1
    assert "refused this driver's authentication token (missing or wrong; RAY_AUTH_MODE is unset)" in missing.stderr
    assert "export RAY_AUTH_MODE=token" in missing.stderr and "RAY_AUTH_TOKEN=<token>" in missing.stderr
    wrong = _orchestrator(
        ["submit", "--address", f"http://127.0.0.1:{token_head['dashboard']}", "model=mlp"],
        tmp_path,
        _env(token_head, RAY_AUTH_TOKEN="not-the-token"),
    )
    assert wrong.returncode == 1
    assert "cannot submit" in wrong.stderr and "export RAY_AUTH_MODE=token" in wrong.stderr


def test_a_job_runs_through_ray_client(token_head, tmp_path):
    done = _orchestrator(
        [
            "train",
            f"cluster.address=ray://127.0.0.1:{token_head['client']}",
            "model=mlp",
            "trainer.max_steps=3",
            "tracking.log_model=false",
        ],
        tmp_path,
        _env(token_head),
    )
    # the proxy's own error only points at its log files on the head: show them when this fails
    server_logs = "".join(
        f"\n--- {path.name}\n{path.read_text()[-3000:]}"
        for path in sorted(token_head["logs"].glob("ray_client_server*"))
    )
    assert done.returncode == 0, done.stderr[-3000:] + server_logs
    assert "run FINISHED" in done.stdout
