"""MLflow's scoring server for one model (`mlflow models serve`, local environment manager), owned by PID.

It runs in its own process group on 127.0.0.1: `stop()` signals that group and nothing else, and the
kernel SIGTERMs it if the thread that started it dies (as the tracking server does, mlflow_server.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Optional

import numpy as np

from orchestrator.export.requirements import ExportError
from orchestrator.tracking.mlflow_server import _dies_with_its_parent, answers, free_port, stop_process_group

HOST = "127.0.0.1"
START_TIMEOUT_S = 180.0
"""Imports, the model's download and its load (torch.export's program) take 15-40 s on 2 busy cores."""
STOP_TIMEOUT_S = 15.0
REQUEST_TIMEOUT_S = 120.0


def serve_command(model_uri: str, port: int) -> list[str]:
    """`mlflow models serve` for `model_uri` in this Python environment (no new virtualenv), one worker."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "--model-uri",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]


class ScoringServer:
    """A scoring server process group we started; a context manager that stops it by its PID."""

    def __init__(self, model_uri: str, tracking_uri: str, log_path: Path, port: Optional[int] = None):
        self.model_uri = model_uri
        self.tracking_uri = tracking_uri
        self.log_path = log_path
        self.port = port
        self.process: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "ScoringServer":
        """Start the server and wait until /ping answers; stops it again if it does not."""
        self.port = self.port or free_port(HOST)
        # the server resolves models:/ URIs through the tracking store; its job runner is a process we do not need
        env = dict(os.environ, MLFLOW_TRACKING_URI=self.tracking_uri, MLFLOW_REGISTRY_URI=self.tracking_uri)
        # mlflow starts `uvicorn` by name: this environment's scripts come first even when it is not activated
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                serve_command(self.model_uri, self.port),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_dies_with_its_parent(),
            )
        try:
            self._wait_ready(self.process, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ExportError(f"mlflow models serve exited with code {process.returncode}{self._log_tail()}")
            if answers(
                f"{self.url}/ping",
                lambda why: ExportError(
                    f"{why}: the scoring server could not have port {self.port}; run the command again"
                ),
            ):
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.5)  # wakes early if the server dies
        raise ExportError(
            f"mlflow models serve did not answer {self.url}/ping within {timeout_s:g} s{self._log_tail()}"
        )

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        """POST the inputs to /invocations ({"inputs": [...]}) and return the predictions as an array."""
        body = json.dumps({"inputs": inputs.tolist()}).encode()
        request = urllib.request.Request(
            f"{self.url}/invocations", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as error:
            raise ExportError(f"the scoring server refused the batch: HTTP {error.code}: {_read(error)}") from None
        return np.asarray(answer["predictions"])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the server's process group, SIGKILL it after `timeout_s`; idempotent."""
        if self.process is not None:
            stop_process_group(self.process, timeout_s)

    def _log_tail(self) -> str:
        if not self.log_path.exists():
            return ""
        return ":\n" + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])

    def __enter__(self) -> "ScoringServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _read(error: IO[bytes]) -> str:
    with contextlib.suppress(Exception):
        return error.read().decode(errors="replace")[:500]
    return ""
