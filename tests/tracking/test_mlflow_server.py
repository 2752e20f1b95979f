"""`orchestrator mlflow-server`: bad input refused before anything starts; a basic-auth server end to end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from orchestrator.cli.commands import main
from orchestrator.config.schema import TrackingConfig
from orchestrator.tracking.mlflow_server import free_port
from orchestrator.tracking.run_recorder import RunRecorder
from orchestrator.tracking.transport import TrackingUnavailable, check_server
from tests.helpers import kill_trees, owned_process, wait_until


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--backend-store-uri", "mysql://db/mlflow"],
            "--backend-store-uri=mysql://db/mlflow is not valid: use sqlite:///path/to/mlflow.db or postgresql://",
        ),
        (["--backend-store-uri", "postgresql://mlflow:pw@db/mlflow"], "a PostgreSQL store needs the psycopg2 driver"),
        (["--port", "70000"], "--port=70000 is not valid: use a port in 1-65535"),
        (["--workers", "0"], "--workers=0 is not valid: use 1 or more"),
    ],
)
def test_bad_options_exit_2_naming_the_value(args, message, tmp_path, capsys):
    assert main(["mlflow-server", "--dir", str(tmp_path / "server"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "pw@" not in err
    assert not (tmp_path / "server").exists()


def test_a_port_in_use_and_basic_auth_without_its_settings_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_FLASK_SERVER_SECRET_KEY", raising=False)
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["mlflow-server", "--dir", str(tmp_path / "server"), "--port", str(port), "--basic-auth"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"--port={port} is not valid: 127.0.0.1:{port} is already in use" in err
    assert "--basic-auth needs MLFLOW_FLASK_SERVER_SECRET_KEY in the environment" in err
    assert "set MLFLOW_AUTH_ADMIN_PASSWORD in the environment for the first start" in err


def test_the_command_serves_with_basic_auth_taking_logins_from_the_environment_and_stops_on_ctrl_c(
    tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    admin_password = "Orchestrator-Test-Admin-2026!"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        MLFLOW_FLASK_SERVER_SECRET_KEY="a-test-secret-key-for-csrf-0123456789",
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_password,
    )
    command = [
        sys.executable,
        "-m",
        "orchestrator",
        "mlflow-server",
        "--port",
        str(port),
        "--dir",
        str(tmp_path / "server"),
        "--basic-auth",
    ]
    lines: list[str] = []
    with owned_process(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), name="test-server-output")
        reader.start()
        try:
            wait_until(
                lambda: (
                    any(line.startswith(f"MLflow tracking server: {url}") for line in lines)
                    or process.poll() is not None
                ),
                180,
                "the server to be up",
            )
            assert process.poll() is None, "".join(lines)
            with pytest.raises(
                TrackingUnavailable, match=r"refused the login \(HTTP 401\): set MLFLOW_TRACKING_USERNAME"
            ):
                check_server(url, "auth")
            monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
            monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
            check_server(url, "auth")
            notices: list[str] = []
            recorder = RunRecorder.create(
                TrackingConfig(uri=url, experiment="auth"),
                {"optim.lr": "0.1"},
                {"orchestrator.overrides": "optim.lr=0.1"},
                notify=notices.append,
            )
            for step in range(1, 4):
                recorder.log_metrics({"train/loss": 1.0 / step}, step)
            recorder.flush()
            recorder.finish("FINISHED")
            client = MlflowClient(url)
            run = client.get_run(recorder.run_id)
            assert run.info.status == "FINISHED" and run.data.params == {"optim.lr": "0.1"}
            assert [m.value for m in client.get_metric_history(recorder.run_id, "train/loss")] == [1.0, 0.5, 1 / 3]
            assert not notices and admin_password not in repr(run.data)
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=60) == 0
        finally:
            if process.poll() is None:
                kill_trees([process])
            reader.join(timeout=30)
    # the server ran in its own process group, which the command stopped: nothing listens any more
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    assert "stopping the MLflow server" in "".join(lines)


def test_a_free_port_lies_where_no_bind_of_port_0_is_handed_one_and_nothing_listens():
    from orchestrator.tracking.mlflow_server import _ephemeral_floor

    floor = _ephemeral_floor()
    ports = {free_port() for _ in range(20)}
    if floor - 20000 >= 1000:  # Linux's default range starts at 32768
        assert all(20000 <= port < floor for port in ports), (floor, sorted(ports))
    for port in ports:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))


def test_a_server_whose_port_another_program_answers_on_is_refused_naming_the_port_and_stopped(tmp_path):
    """What a gRPC server (Ray starts several) answers to HTTP: bytes that are no status line."""
    from orchestrator.tracking.mlflow_server import MlflowServer, ServerError, local_spec

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        def answer_in_binary() -> None:
            while True:
                try:
                    connection, _ = taken.accept()
                except OSError:  # the listener was shut down: the test is over
                    return
                with connection:
                    connection.recv(4096)
                    connection.sendall(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x05\x00\x00@\x00\r\n")

        answering = threading.Thread(target=answer_in_binary)
        answering.start()
        server = MlflowServer(local_spec(tmp_path / "server", port=port), log_path=tmp_path / "server.log")
        try:
            with pytest.raises(ServerError) as refused:
                server.start()
        finally:
            taken.shutdown(socket.SHUT_RDWR)
            answering.join()
    assert str(refused.value).startswith(f"--port={port} is not valid: another program answers on 127.0.0.1:{port}")
    assert server.process is not None and server.process.poll() is not None  # the server we started is stopped
