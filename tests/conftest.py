"""Session fixtures: one real Ray cluster and one MLflow server for the session, and a leak check around
every test that blames the test that leaked and cleans up after it, so that later tests are judged alone."""

from __future__ import annotations

import ctypes
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

# scikit-learn sets KMP_* variables when first imported; importing it here keeps that library side
# effect out of the per-test environment check below
import sklearn  # noqa: F401

from tests.helpers import WATCHED_SIGNALS, kill_trees

PR_SET_CHILD_SUBREAPER = 36


def pytest_configure(config):
    """Give this test session a Ray temp folder of its own and adopt every orphaned descendant.

    RAY_TMPDIR: Ray writes the address of the newest cluster to <tmp>/ray/ray_current_cluster, which is
    machine-wide under /tmp/ray (and missing on a fresh machine); every Ray the tests start writes there
    instead, so no test finds or changes another session's cluster. The subreaper flag makes a process
    that a test's child leaves behind (a server whose parent was killed) our child rather than init's,
    so the leak check below sees it and ends it.
    """
    if "RAY_TMPDIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="orch-ray-", dir="/tmp")
        (Path(folder) / "ray").mkdir()
        os.environ["RAY_TMPDIR"] = folder
        config.stash[_ray_tmpdir] = folder
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


_ray_tmpdir = pytest.StashKey[str]()

RAY_FIXTURES = {"ray_cluster", "ray_token_env"}
"""Fixtures that start a real Ray cluster: a test that uses one is in the `ray` tier."""
E2E_FIXTURES = {"mlflow_server"}
"""Fixtures that start a server process: a test that uses one is in the `e2e` tier."""
RAY_FOLDERS = ("launchers",)
"""Test folders (at any depth under tests/) whose tests start jobs on Ray themselves."""
E2E_FOLDERS = ("k8s",)
"""Test folders whose tests run kustomize and validators as processes."""
E2E_MODULES = ("test_mlflow_server.py",)
"""Test modules that start servers or CLIs of their own."""
LONGEST_FIRST = (
    "tests/launchers/jobs/test_restarts.py",
    "tests/launchers/jobs/test_own_code.py",
    "tests/worker/test_script_mode.py",
    "tests/train/test_sharding.py",
    "tests/launchers/submission/test_job_submission.py",
    "tests/launchers/test_multinode.py",
    "tests/launchers/jobs/test_sweeps.py",
    "tests/cli/test_commands.py",
    "tests/tracking/test_tracking_server.py",
    "tests/launchers/jobs/test_job_runner.py",
)
"""The modules that took longest in `make test` (2026-12-03, 2 cores), longest first; only their order
depends on this list."""


def pytest_collection_modifyitems(config, items):
    """Sort every test into its tier: in-process (no marker), `ray` (a real Ray cluster), `e2e` (servers,
    CLI processes, kustomize). Both process tiers are also `slow`: `make test-fast` runs the in-process tier."""
    for item in items:
        path = Path(str(item.fspath))
        folders = set(path.relative_to(Path(__file__).parent).parts[:-1])
        fixtures = set(getattr(item, "fixturenames", ()))
        tiers = []
        if RAY_FIXTURES & fixtures or folders & set(RAY_FOLDERS):
            tiers.append(pytest.mark.ray)
        if E2E_FIXTURES & fixtures or folders & set(E2E_FOLDERS) or path.name in E2E_MODULES:
            tiers.append(pytest.mark.e2e)
        for tier in tiers + ([pytest.mark.slow] if tiers else []):
            item.add_marker(tier)
    # the longest modules first: two pytest workers take a module at a time, and a long module picked up
    # last keeps one worker busy while the other idles; the short in-process modules fill the end
    slow_modules = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}

    def order(item) -> tuple[int, int]:
        module = item.nodeid.split("::")[0]
        rank = LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)
        return (module not in slow_modules, rank)

    items.sort(key=order)


def pytest_unconfigure(config):
    folder = config.stash.get(_ray_tmpdir, None)
    if folder is not None:
        os.environ.pop("RAY_TMPDIR", None)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real Ray cluster (head node with the dashboard for ray.util.state), connected in-process.

    Jobs run in-process reuse this connection (launchers.cluster.connection.connect keeps an existing one),
    and subprocess CLIs reach it through `cluster.address`. It is started and stopped by this
    fixture only: never `ray stop`, never address="auto".
    """
    import ray
    from ray.cluster_utils import Cluster

    # short: Ray's socket paths under it must fit AF_UNIX's 107 bytes, which pytest-xdist's basetemp
    # (.../pytest-N/popen-gw0/...) would not leave room for
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 4,
            "include_dashboard": True,
            "dashboard_port": 0,
            "temp_dir": str(temp_dir),
            "resources": {"head_node": 100},
        },
    )
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite store, served artifacts) on a free loopback port, stopped by its PID."""
    from orchestrator.tracking.mlflow_server import MlflowServer, free_port, local_spec

    data_dir = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(local_spec(data_dir, port=free_port()), log_path=data_dir / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ray_token_env(tmp_path_factory) -> dict[str, str]:
    """Token authentication for clusters started with `ray start --head`: a token of this session's own.

    Nothing is read from or written to ~/.ray: a fresh machine has no token there, and a developer's
    real one must not be touched.
    """
    token_file = tmp_path_factory.mktemp("ray-auth") / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves threads, processes, environment changes or signal handlers behind.

    Whatever it left is cleaned up here (processes killed with their trees, the environment and the
    handlers put back), and only what is new since the test began counts, so a leak fails only the
    test that made it.
    """
    environment = dict(os.environ)
    threads = set(threading.enumerate())
    children = {child.pid for child in psutil.Process().children()}
    handlers = {signum: signal.getsignal(signum) for signum in WATCHED_SIGNALS}
    yield
    problems = []
    new_threads = [
        t.name for t in threading.enumerate() if t not in threads and t.is_alive() and t.name.startswith("orchestrator")
    ]
    if new_threads:
        problems.append(f"threads left running: {new_threads}")
    left = _new_live_children(children)
    if left:
        problems.append(f"child processes left running: {[(c.pid, _cmdline(c)) for c in left]}")
        kill_trees(left)
    changed = sorted(
        k
        for k in set(environment) | set(os.environ)
        if environment.get(k) != os.environ.get(k) and k != "PYTEST_CURRENT_TEST"
    )
    if changed:
        problems.append(f"environment variables changed: {changed}")
        os.environ.clear()
        os.environ.update({k: v for k, v in environment.items() if k != "PYTEST_CURRENT_TEST"})
    replaced = [
        signal.Signals(signum).name for signum, handler in handlers.items() if signal.getsignal(signum) is not handler
    ]
    if replaced:
        problems.append(f"signal handlers left installed: {replaced}")
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    assert not problems, "; ".join(problems)


EXIT_GRACE_S = 5.0
"""A child that is already exiting when the test ends (a Ray process its driver just shut down) is given
this long to finish before it counts as left behind."""


def _new_live_children(before: set[int]) -> list[psutil.Process]:
    # scanned again after each wait: a short-lived orphan can be handed to this session (the subreaper) while it
    # waits, e.g. the `sleep 1` of the watchdog loop Ray's job supervisor runs, whose shell ends with the job
    deadline = time.monotonic() + EXIT_GRACE_S
    found = _new_children(before)
    while found and time.monotonic() < deadline:
        psutil.wait_procs(found, timeout=max(0.0, deadline - time.monotonic()))
        found = _new_children(before)
    return found


def _new_children(before: set[int]) -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children():
        try:
            if child.pid not in before and child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []
