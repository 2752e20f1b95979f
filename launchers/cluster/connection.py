"""Connecting to Ray and describing the cluster as a ClusterSnapshot for the planner."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Iterator, Optional, TypedDict

from orchestrator.config.schema import ClusterConfig
from orchestrator.errors import LaunchError
from orchestrator.planning.plan import ClusterSnapshot, NodeSnapshot


class _InitOptions(TypedDict):
    """The ray.init options every connection uses (typed, so each checks against ray.init's own parameter)."""

    logging_level: int
    configure_logging: bool


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
    options: _InitOptions = {"logging_level": logging.WARNING, "configure_logging": True}
    try:
        with _keeping_sigterm_handler():
            if cluster.address is None:
                # "local" always starts a new instance: with no address, ray.init() would instead join the
                # latest cluster someone started on this machine with `ray start`
                ray.init(address="local", num_cpus=cluster.num_cpus, include_dashboard=cluster.dashboard, **options)
            else:
                _init_with_retries(cluster.address, options)
    except Exception as error:  # Ray raises ConnectionError, RuntimeError, AuthenticationError...
        raise LaunchError(_connect_help(cluster, error)) from error
    try:
        yield cluster_snapshot(fixed_size=cluster.address is None)
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _keeping_sigterm_handler() -> Iterator[None]:
    """Put back a SIGTERM handler of the caller's that ray.init replaced.

    A driver's ray.init installs `sys.exit(15)` for SIGTERM; `orchestrator train` handles SIGTERM like
    Ctrl-C (the ranks stop and the run is KILLED), which that would bypass. A process without a
    handler of its own (SIG_DFL) keeps Ray's.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


CLIENT_START_ATTEMPTS = 3
CLIENT_START_BACKOFF_S = 2.0
TRANSIENT_CLIENT_MARKER = "Starting Ray client server failed"


def _init_with_retries(address: str, options: _InitOptions) -> None:
    """ray.init, retried when a Ray Client proxy fails to start this driver's server process.

    The proxy on the head starts one server process per client; on a busy head that start can fail
    once and succeed on the next connection, so a ray:// driver tries a few times before giving up.
    """
    import ray

    log = logging.getLogger(__name__)
    for attempt in range(1, CLIENT_START_ATTEMPTS + 1):
        try:
            ray.init(address=address, **options)
            return
        except Exception as error:
            transient = address.startswith("ray://") and TRANSIENT_CLIENT_MARKER in _error_chain_text(error)
            if not transient or attempt == CLIENT_START_ATTEMPTS:
                raise
            log.warning(
                "the Ray Client proxy at %s could not start a server for this driver (attempt %d of %d); "
                "connecting again",
                address,
                attempt,
                CLIENT_START_ATTEMPTS,
            )
            time.sleep(CLIENT_START_BACKOFF_S * attempt)


AUTH_MARKERS = ("InvalidAuthToken", "AuthenticationError", "Authentication token is missing or incorrect")
TOKEN_HOWTO = (
    "export RAY_AUTH_MODE=token and give this machine the cluster's token: copy the head node's "
    "~/.ray/auth_token to ~/.ray/auth_token here, or export RAY_AUTH_TOKEN=<token> "
    "(or RAY_AUTH_TOKEN_PATH=<file>)"
)


def _connect_help(cluster: ClusterConfig, error: Exception) -> str:
    if cluster.address is None:
        return f"could not start an embedded Ray instance: {type(error).__name__}: {error}"
    where = f"the Ray cluster at cluster.address={cluster.address}"
    mode = os.environ.get("RAY_AUTH_MODE", "unset")
    if any(marker in _error_chain_text(error) for marker in AUTH_MARKERS):
        return (
            f"{where} refused this driver's authentication token (missing or wrong; RAY_AUTH_MODE is {mode}). "
            f"Clusters started with `ray start` require a token by default (Ray 2.5x+): {TOKEN_HOWTO}"
        )
    message = (
        f"could not reach {where}: {type(error).__name__}: {error}. Check the address (auto, HOST:6379 "
        f"or ray://HOST:10001) and that the head node is running"
    )
    if mode != "token":
        message += f"; if the cluster uses token authentication (the default for `ray start`), {TOKEN_HOWTO}"
    return message


def _error_chain_text(error: BaseException) -> str:
    # Ray wraps the GCS's InvalidAuthToken reply in a generic ConnectionError; the cause keeps the text
    texts: list[str] = []
    seen: set[int] = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def cluster_snapshot(fixed_size: bool) -> ClusterSnapshot:
    """Alive nodes with their total and currently free resources."""
    import ray

    if ray.util.client.ray.is_connected():
        # Ray Client (ray://) drivers cannot read the GCS tables; a zero-CPU task inside the cluster can
        return ray.get(ray.remote(num_cpus=0)(_read_snapshot).remote(fixed_size))
    return _read_snapshot(fixed_size)


def _read_snapshot(fixed_size: bool) -> ClusterSnapshot:
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


def draining_nodes() -> dict[str, Optional[float]]:
    """Nodes being drained (a preemption with notice) -> when they go, in time.time() seconds (None: no deadline)."""
    import ray

    if ray.util.client.ray.is_connected():
        return ray.get(ray.remote(num_cpus=0)(_read_draining).remote())
    return _read_draining()


def _read_draining() -> dict[str, Optional[float]]:
    # DeveloperAPI, as available_resources_per_node: the GCS's drain requests with their deadlines (Ray 2.60
    # has no public call for them); a deadline of 0 means none was given
    from ray._private.state import state

    return {node: (deadline / 1000.0 if deadline else None) for node, deadline in state.get_draining_nodes().items()}
