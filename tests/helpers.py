"""Shared test helpers: jobs composed like the CLI does or built directly, and waiting on eventually-consistent
state."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import socket
import subprocess
import time
import typing
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import psutil

from orchestrator.config.schema import JobConfig

if typing.TYPE_CHECKING:
    from orchestrator.planning.rank_specs import WorkerSpec


def compose_job(overrides: Sequence[str], base_dir: Path) -> JobConfig:
    """Compose conf/ with Hydra exactly as `orchestrator train` does, then load and validate it."""
    from orchestrator.config.compose import compose_job as compose

    return compose(overrides, base_dir)


def job_config(overrides: Sequence[str] = ()) -> JobConfig:
    """A validated JobConfig from the schema's dataclasses, without Hydra or OmegaConf: for the in-process tier.

    Takes the same `key=value` overrides as the CLI (`model=mlp`, `scaling.num_workers=4`,
    `+scaling.nccl_env.NCCL_DEBUG=INFO`), values read as YAML; the defaults are the schema's, with
    conf/'s model=cnn and data=digits.
    """
    import yaml

    from orchestrator.config.rules import validate
    from orchestrator.config.schema import DATA_SCHEMAS, MODEL_SCHEMAS

    job = JobConfig(model=MODEL_SCHEMAS["cnn"](name="cnn"), data=DATA_SCHEMAS["digits"](name="digits"), loss=None)
    for override in overrides:
        key, _, text = override.removeprefix("+").partition("=")
        if key in ("model", "data"):
            schemas = MODEL_SCHEMAS if key == "model" else DATA_SCHEMAS
            job = dataclasses.replace(job, **{key: schemas[text](name=text)})
        else:
            job = _replaced(job, key.split("."), yaml.safe_load(text))
    validate(job)
    return job


def _replaced(node, path: list[str], value, value_type=None):
    """`node` with the value at `path` replaced; a dict entry takes its dict's declared value type."""
    if not path:
        return value_type(value) if value_type in (str, int, float) else value
    if isinstance(node, dict):
        return {**node, path[0]: _replaced(node.get(path[0]), path[1:], value, value_type)}
    hint = typing.get_type_hints(type(node))[path[0]]
    entry_type = typing.get_args(hint)[-1] if typing.get_origin(hint) is dict else None
    return dataclasses.replace(node, **{path[0]: _replaced(getattr(node, path[0]), path[1:], value, entry_type)})


def worker_spec(rank: int = 0, world_size: int = 1, node_ip: str = "127.0.0.1", env=None) -> "WorkerSpec":
    """One rank's spec on a single gloo node (the ranks of a test double, or a process group in-process)."""
    from orchestrator.planning.rank_specs import WorkerSpec

    return WorkerSpec(
        world_rank=rank,
        local_rank=rank,
        node_rank=0,
        world_size=world_size,
        local_world_size=world_size,
        bundle_index=rank,
        node_id="n0",
        node_ip=node_ip,
        backend="gloo",
        torch_threads=1,
        env=dict(env or {}),
    )


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `predicate` until true; for state that Ray reports eventually (actor deaths)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


def session_address() -> str:
    """The GCS address of the cluster this test process is connected to.

    ray.util.state without an address looks for "the latest cluster on the machine", which is
    another cluster whenever someone else runs one; tests always name theirs.
    """
    import ray

    return ray.get_runtime_context().gcs_address


def live_actors(address: Optional[str] = None) -> list:
    """Actors of the cluster at `address` (default: this session's) that are not dead, with details."""
    from ray.util.state import list_actors

    return list_actors(address=address or session_address(), filters=[("state", "!=", "DEAD")], limit=1000, detail=True)


def job_resources_left(prefix: str = "orchestrator-", address: Optional[str] = None) -> tuple[list[str], list[str]]:
    """Names of alive actors and live placement groups that belong to orchestrator jobs."""
    from ray.util.state import list_placement_groups

    address = address or session_address()
    actors = [a.name for a in live_actors(address) if (a.name or "").startswith(prefix)]
    groups = [
        g.name
        for g in list_placement_groups(address=address, limit=1000)
        if (g.name or "").startswith(prefix) and g.state != "REMOVED"
    ]
    return actors, groups


def assert_no_job_resources(prefix: str = "orchestrator-", timeout_s: float = 15.0) -> None:
    """Every actor and placement group of orchestrator jobs is gone (Ray reports deaths eventually)."""
    wait_until(
        lambda: job_resources_left(prefix) == ([], []),
        timeout_s,
        f"no actors/placement groups named {prefix}* (left: {job_resources_left(prefix)})",
    )


def worker_pid(address: Optional[str] = None) -> Optional[int]:
    """The PID of some alive worker actor of an orchestrator job, or None while there is none."""
    pids = worker_pids(address)
    return pids[0] if pids else None


def worker_pids(address: Optional[str] = None) -> list[int]:
    """The PIDs of every alive worker actor of orchestrator jobs."""
    return [
        a.pid
        for a in live_actors(address)
        if a.state == "ALIVE" and a.class_name == "WorkerActor" and (a.name or "").startswith("orchestrator-") and a.pid
    ]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports free on the loopback interface right now (all bound at once, so distinct)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


KILL_WAIT_S = 30.0


def kill_trees(roots: Iterable[psutil.Process | subprocess.Popen | int]) -> None:
    """SIGKILL each root and every process below it, found before any is killed, and wait until they are gone.

    Descendants are collected first because a killed parent's children are re-parented (to init, or to
    the test session as subreaper) and could no longer be found through it; a child that started its
    own session (an `mlflow server`) is still below its parent until then.
    """
    roots = list(roots)
    processes: dict[int, psutil.Process] = {}
    for root in roots:
        if isinstance(root, subprocess.Popen) and root.poll() is not None:
            continue  # reaped already: its PID may belong to someone else by now
        pid = root if isinstance(root, int) else root.pid
        try:
            process = psutil.Process(pid)
            for found in [process, *process.children(recursive=True)]:
                processes[found.pid] = found
        except psutil.NoSuchProcess:
            continue
    for process in processes.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(list(processes.values()), timeout=KILL_WAIT_S)
    for root in roots:
        if isinstance(root, subprocess.Popen):
            root.wait()  # reap it, so no zombie and no ResourceWarning


@contextlib.contextmanager
def owned_process(command: Sequence[str], **popen) -> Iterator[subprocess.Popen]:
    """`subprocess.Popen(command, **popen)` whose whole process tree is killed on leaving, on every path.

    A test that stops the process itself (Ctrl-C, a clean exit) leaves nothing for this to do; a test
    that fails half-way leaves no server or rank running after it. The child starts as a command typed
    in a terminal does, with SIGINT at its default: a test suite started in the background (`make test &`,
    nohup, some CI runners) passes SIGINT on ignored, and the child would then never see the Ctrl-C the
    test sends it.
    """
    popen.setdefault("preexec_fn", _sigint_default)
    process = subprocess.Popen(command, **popen)
    try:
        yield process
    finally:
        kill_trees([process])


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


WATCHED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
"""Handlers a test may cause to be installed (SIGALRM is pytest-timeout's own)."""


@contextlib.contextmanager
def signal_handlers_kept() -> Iterator[None]:
    """Put back every watched signal handler on leaving: for test machinery that installs its own
    (ray.cluster_utils' add_node installs a SIGTERM handler in the test process)."""
    handlers = {signum: signal.getsignal(signum) for signum in WATCHED_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
