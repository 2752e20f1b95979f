"""Connecting to Ray and describing the cluster as a ClusterSnapshot for the planner."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

from orchestrator.config.schema import ClusterConfig
from orchestrator.errors import LaunchError
from orchestrator.plan import ClusterSnapshot, NodeSnapshot


@contextlib.contextmanager
def connect(cluster: ClusterConfig) -> Iterator[ClusterSnapshot]:
    """Start the embedded instance or connect to `cluster.address`; shut down or disconnect on exit.

    A process that is already connected (a sweep's driver running several jobs, a test session)
    keeps its connection: the job uses it and leaves it open.
    """
    import ray

    if ray.is_initialized():
        yield cluster_snapshot(fixed_size=False)
        return
    options = {"logging_level": logging.WARNING, "configure_logging": True}
    try:
        if cluster.address is None:
            # "local" always starts a new instance: with no address, ray.init() would instead join the
            # latest cluster someone started on this machine with `ray start`
            ray.init(address="local", num_cpus=cluster.num_cpus, include_dashboard=cluster.dashboard, **options)
        else:
            ray.init(address=cluster.address, **options)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, AuthenticationError...
        raise LaunchError(_connect_help(cluster, error)) from error
    try:
        yield cluster_snapshot(fixed_size=cluster.address is None)
    finally:
        ray.shutdown()


def _connect_help(cluster: ClusterConfig, error: Exception) -> str:
    where = "an embedded Ray instance" if cluster.address is None else f"the Ray cluster at cluster.address={cluster.address}"
    return f"could not start or reach {where}: {type(error).__name__}: {error}"


def cluster_snapshot(fixed_size: bool) -> ClusterSnapshot:
    """Alive nodes with their total and currently free resources."""
    import ray
    from ray._private.state import available_resources_per_node  # DeveloperAPI: per-node free resources

    available = available_resources_per_node()
    nodes = tuple(
        NodeSnapshot(
            node_id=node["NodeID"],
            ip=node["NodeManagerAddress"],
            total=dict(node["Resources"]),
            available=dict(available.get(node["NodeID"], {})),
        )
        for node in ray.nodes()
        if node["Alive"]
    )
    return ClusterSnapshot(nodes=nodes, fixed_size=fixed_size)
