"""A local MLflow tracking server we own: `mlflow server` as a subprocess, stopped by its PID.

The server keeps runs in SQLite (default) or PostgreSQL and serves artifacts itself
(`--artifacts-destination`), so workers on other machines need no shared disk. It runs in its own
process group: `stop()` signals that group (the CLI and the uvicorn process it spawns) and nothing
else on the machine. On Linux the server also gets SIGTERM when the thread that started it dies, however
it dies (SIGKILL included), so a killed owner never leaves a server running with no one to stop it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from orchestrator.errors import OrchestratorError
from orchestrator.redaction import redact_value

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
DEFAULT_DIR = "mlflow-server"
START_TIMEOUT_S = 120.0
"""A cold start (imports, schema migration of a fresh database) takes 10-20 s on a small machine."""
STOP_TIMEOUT_S = 15.0
BACKEND_SCHEMES = ("sqlite:///", "postgresql://", "postgresql+psycopg2://")
AUTH_DATABASE = "basic_auth.db"
"""Where MLflow's basic-auth app keeps users: relative to the server's working directory (its data dir)."""


class ServerError(OrchestratorError, ValueError):
    """The tracking server cannot be started as asked; says what to change."""

    exit_code = 2


@dataclass(frozen=True)
class ServerSpec:
    """How `mlflow server` is started."""

    backend_store_uri: str
    """sqlite:///path/to/mlflow.db or postgresql://user@host:5432/db."""
    artifacts_destination: str
    """Where the server keeps artifacts it receives (a folder, or s3://... with the right extras)."""
    data_dir: str
    """The server's working directory (logs, the basic-auth user database)."""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = 1
    """uvicorn worker processes; one suits SQLite (one writer at a time) and a small machine."""
    basic_auth: bool = False
    """Start MLflow's basic-auth app (users and permissions; clients log in through the environment)."""

    @property
    def url(self) -> str:
        """The tracking URI jobs use: tracking.uri=<url>."""
        return f"http://{self.host}:{self.port}"


def local_spec(
    data_dir: Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    backend_store_uri: Optional[str] = None,
    artifacts_destination: Optional[str] = None,
    workers: int = 1,
    basic_auth: bool = False,
) -> ServerSpec:
    """A spec with SQLite and artifacts inside `data_dir` unless a store or destination is given."""
    data_dir = data_dir.resolve()
    return ServerSpec(
        backend_store_uri=backend_store_uri or f"sqlite:///{data_dir / 'mlflow.db'}",
        artifacts_destination=artifacts_destination or str(data_dir / "artifacts"),
        data_dir=str(data_dir),
        host=host,
        port=port,
        workers=workers,
        basic_auth=basic_auth,
    )


def validate_spec(spec: ServerSpec) -> None:
    """Reject what `mlflow server` would fail on later, naming the flag, the value and what is valid."""
    problems = []
    if not spec.backend_store_uri.startswith(BACKEND_SCHEMES):
        problems.append(
            f"--backend-store-uri={redact_value(spec.backend_store_uri)} is not valid: use "
            f"sqlite:///path/to/mlflow.db or postgresql://user@host:5432/dbname"
        )
    elif spec.backend_store_uri.startswith("postgresql") and not _importable("psycopg2"):
        problems.append("a PostgreSQL store needs the psycopg2 driver: pip install psycopg2-binary")
    if not 1 <= spec.port <= 65535:
        problems.append(f"--port={spec.port} is not valid: use a port in 1-65535")
    elif not _port_free(spec.host, spec.port):
        problems.append(
            f"--port={spec.port} is not valid: {spec.host}:{spec.port} is already in use; choose another port"
        )
    if spec.workers < 1:
        problems.append(f"--workers={spec.workers} is not valid: use 1 or more")
    if spec.basic_auth:
        problems.extend(_basic_auth_problems(spec))
    if problems:
        raise ServerError("cannot start the MLflow server:\n" + "\n".join(f"  - {problem}" for problem in problems))


def _basic_auth_problems(spec: ServerSpec) -> list[str]:
    problems = []
    if not _importable("flask_wtf"):
        problems.append("--basic-auth needs MLflow's auth extra: pip install 'mlflow[auth]'")
    if not os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        problems.append(
            "--basic-auth needs MLFLOW_FLASK_SERVER_SECRET_KEY in the environment (any long random "
            "string, the same for every server process)"
        )
    first_start = not (Path(spec.data_dir) / AUTH_DATABASE).exists()
    if first_start and not os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        problems.append(
            "--basic-auth starts with no users: set MLFLOW_AUTH_ADMIN_PASSWORD in the environment for "
            "the first start (it creates the user `admin`)"
        )
    return problems


def server_command(spec: ServerSpec) -> list[str]:
    """The `mlflow server` command line for `spec`."""
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        spec.host,
        "--port",
        str(spec.port),
        "--backend-store-uri",
        spec.backend_store_uri,
        "--artifacts-destination",
        spec.artifacts_destination,
        "--workers",
        str(spec.workers),
    ]
    return command + (["--app-name", "basic-auth"] if spec.basic_auth else [])


class MlflowServer:
    """An `mlflow server` process group we started; stopped by its PID on success, failure and Ctrl-C."""

    def __init__(self, spec: ServerSpec, log_path: Optional[Path] = None):
        self.spec = spec
        self.log_path = log_path
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "MlflowServer":
        """Start the server and wait until it answers /health; stops it again if it does not."""
        Path(self.spec.data_dir).mkdir(parents=True, exist_ok=True)
        # MLflow's GenAI job runner is a further process we do not need
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        with contextlib.ExitStack() as files:
            log = files.enter_context(open(self.log_path, "ab")) if self.log_path else None
            process = self.process = subprocess.Popen(
                server_command(self.spec),
                cwd=self.spec.data_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT if log else None,
                start_new_session=True,
                preexec_fn=_dies_with_its_parent(),
            )
        try:
            self._wait_healthy(process, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> Optional[int]:
        """The server's process id (also its process group id)."""
        return None if self.process is None else self.process.pid

    def _wait_healthy(self, process: subprocess.Popen[bytes], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerError(
                    f"mlflow server exited with code {process.returncode} while starting{self._log_tail()}"
                )
            if answers(
                f"{self.spec.url}/health",
                lambda why: ServerError(f"--port={self.spec.port} is not valid: {why}; choose a free port"),
            ):
                return
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.25)  # wakes early if the server dies
        raise ServerError(
            f"mlflow server did not answer {self.spec.url}/health within {timeout_s:g} s{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()[-15:]
        return ":\n" + "\n".join(lines)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the server's process group, SIGKILL it after `timeout_s`; idempotent."""
        if self.process is not None:
            stop_process_group(self.process, timeout_s)

    def kill(self) -> None:
        """SIGKILL the server's process group at once (what a crash or a lost machine looks like)."""
        if self.process is None:
            return
        _signal_group(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


PR_SET_PDEATHSIG = 1


def _dies_with_its_parent() -> Optional[Callable[[], None]]:
    """A preexec_fn asking the kernel to SIGTERM the child when its parent dies (Linux; None elsewhere).

    `mlflow server` forwards SIGTERM to its uvicorn process, so the whole server stops. The libc
    function is looked up here, in the parent, so the child only makes one system call between fork
    and exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def ask() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return ask


def stop_process_group(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the process group `process` leads, SIGKILL what is left of it after `timeout_s`, and reap it."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process.pid, signal.SIGKILL)  # a child of the leader (uvicorn's worker) may outlive it
    process.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(pgid, signum)


def answers(url: str, refusal: Callable[[str], Exception]) -> bool:
    """Whether GET `url` answers 200 (False while nothing listens yet or the server is not ready); when another
    program answers there, not in HTTP, `refusal(why)` is raised (a port taken between choosing and binding)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
    except http.client.HTTPException as error:
        where = urllib.parse.urlsplit(url).netloc
        raise refusal(f"another program answers on {where}, not in HTTP ({type(error).__name__})") from None


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port on `host` that nothing listens on right now, for a server we are about to start on it.

    It is taken above Ray's worker ports (10002-19999 by default) and below the kernel's ephemeral range:
    every program that binds port 0 (gRPC servers, Ray's own among them) is handed a port from that range,
    and one could be handed ours between this check and the server's bind. Where that gap is too narrow
    the kernel's choice is taken.
    """
    floor = _ephemeral_floor()
    if floor - PORT_FLOOR >= MIN_PORT_CHOICE:
        chooser = random.SystemRandom()
        for _ in range(100):
            port = chooser.randrange(PORT_FLOOR, floor)
            if _port_free(host, port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


PORT_FLOOR = 20000
MIN_PORT_CHOICE = 1000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands to a bind of port 0 (Linux's default where it cannot be read)."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def parse_args(argv: Sequence[str]) -> ServerSpec:
    """`orchestrator mlflow-server` options -> ServerSpec (defaults: SQLite and artifacts in ./mlflow-server)."""
    parser = argparse.ArgumentParser(
        prog="orchestrator mlflow-server",
        description=("Run an MLflow tracking server until Ctrl-C. Jobs log to it with tracking.uri=http://HOST:PORT."),
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="interface to listen on (default %(default)s; 0.0.0.0 lets workers on other machines reach it)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default %(default)s)")
    parser.add_argument(
        "--dir", default=DEFAULT_DIR, help="data folder: SQLite store, artifacts, auth users (default ./%(default)s)"
    )
    parser.add_argument(
        "--backend-store-uri",
        help="sqlite:///path.db (default: <dir>/mlflow.db) or postgresql://user@host:5432/db (password in PGPASSWORD)",
    )
    parser.add_argument("--artifacts-destination", help="where served artifacts go (default: <dir>/artifacts)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers (default %(default)s)")
    parser.add_argument(
        "--basic-auth",
        action="store_true",
        help="MLflow's basic-auth app: needs "
        "MLFLOW_FLASK_SERVER_SECRET_KEY, and MLFLOW_AUTH_ADMIN_PASSWORD on the first start",
    )
    args = parser.parse_args(list(argv))
    return local_spec(
        Path(args.dir),
        host=args.host,
        port=args.port,
        backend_store_uri=args.backend_store_uri,
        artifacts_destination=args.artifacts_destination,
        workers=args.workers,
        basic_auth=args.basic_auth,
    )


def mlflow_server_main(argv: Sequence[str]) -> int:
    """Validate, start, print where it is, wait for Ctrl-C (or SIGTERM), stop; returns the exit code."""
    try:
        spec = parse_args(argv)
        validate_spec(spec)
        server = MlflowServer(spec).start()
    except ServerError as error:
        print(f"orchestrator mlflow-server: {error}", file=sys.stderr)
        return error.exit_code
    except SystemExit as exit_request:  # argparse: --help or a usage error
        return exit_request.code if isinstance(exit_request.code, int) else 2
    print(
        f"MLflow tracking server: {spec.url} (pid {server.pid}; Ctrl-C stops it)\n"
        f"  backend store: {redact_value(spec.backend_store_uri)}\n"
        f"  artifacts:     {spec.artifacts_destination} (served through the server)\n"
        f"  send runs:     orchestrator train tracking.uri={spec.url}\n"
        f"  compare runs:  orchestrator compare --tracking-uri {spec.url}",
        flush=True,
    )
    try:
        process = server.process
        assert process is not None  # start() returned, so the process is running
        code = process.wait()
        print(f"orchestrator mlflow-server: the server exited with code {code}", file=sys.stderr)
        return code or 1
    except KeyboardInterrupt:
        print("stopping the MLflow server", file=sys.stderr)
        return 0
    finally:
        server.stop()
