"""Session fixtures: one real Ray cluster and one MLflow server for the session, and a leak check around every test."""

from __future__ import annotations

import os
import threading

import psutil
import pytest

# scikit-learn sets KMP_* variables when first imported; importing it here keeps that library side
# effect out of the per-test environment check below
import sklearn  # noqa: F401


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A real Ray cluster (head node with the dashboard for ray.util.state), connected in-process.

    Jobs run in-process reuse this connection (launchers.ray_cluster.connect keeps an existing one),
    and subprocess CLIs reach it through `cluster.address`. It is started and stopped by this
    fixture only: never `ray stop`, never address="auto".
    """
    import ray
    from ray.cluster_utils import Cluster

    temp_dir = tmp_path_factory.mktemp("ray")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 4, "include_dashboard": True, "dashboard_port": 0, "temp_dir": str(temp_dir),
        "resources": {"head_node": 100},
    })
    ray.init(address=cluster.address, logging_level="WARNING")
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite store, served artifacts) on a free loopback port, stopped by its PID."""
    from launchers.mlflow_server import MlflowServer, free_port, local_spec

    data_dir = tmp_path_factory.mktemp("mlflow-server")
    server = MlflowServer(local_spec(data_dir, port=free_port()), log_path=data_dir / "server.log").start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves our threads, child processes or environment changes behind."""
    environment = dict(os.environ)
    children = {child.pid for child in psutil.Process().children()}
    yield
    threads = [t.name for t in threading.enumerate() if t.name.startswith("orchestrator")]
    assert not threads, f"threads left running: {threads}"
    new_children = [c for c in psutil.Process().children() if c.pid not in children and c.is_running()
                    and c.status() != psutil.STATUS_ZOMBIE]
    assert not new_children, f"child processes left running: {[(c.pid, c.cmdline()) for c in new_children]}"
    changed = {k for k in set(environment) | set(os.environ)
               if environment.get(k) != os.environ.get(k) and k != "PYTEST_CURRENT_TEST"}
    assert not changed, f"environment variables changed: {sorted(changed)}"
