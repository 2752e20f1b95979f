"""The Ray actor that hosts one rank: the one place worker processes are started from."""

from __future__ import annotations

import os
import queue
import signal
import socket
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Mapping, Optional, cast

from orchestrator.config.schema import JobConfig
from orchestrator.lifecycle.rank_reports import ErrorReport, PreemptionNotice, ResultReport
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.worker.process_state import ProcessState
from orchestrator.worker.script_host import HostStarter, ScriptHost
from orchestrator.worker.stop import StopSignal

if TYPE_CHECKING:  # only types here: the loop's module imports torch, which a script's worker never needs
    from ray.actor import ActorHandle

    from launchers.actor_handles import RemoteMethod
    from orchestrator.train.loop import WorkerCache
    from orchestrator.worker.entry import Attempt

_END = object()
MAX_BATCH = 256


@dataclass(frozen=True)
class ReportBatch:
    """What one `reports()` call hands the driver: the reports queued so far, and whether the rank ended."""

    reports: list
    done: bool


class WorkerActor:
    """One rank's process. `start` runs the rank on a thread; `reports` hands its reports over.

    Training runs on a thread of its own and queues reports locally, so the loop never waits for the
    driver. The driver keeps one `reports()` call outstanding per rank: the call returns as soon as
    anything is queued (a long poll), which works over plain object refs, Ray Client included.
    """

    def __init__(self) -> None:
        self._stop = StopSignal()
        self._outbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._cache: Optional[WorkerCache] = None  # data set and model kept for the next attempt of the same job
        self._spec: Optional[WorkerSpec] = None
        self._noticed = False
        self._script_host: Optional[ScriptHost] = None
        """A script's process started ahead for the next script attempt (see orchestrator.worker.script_host)."""
        self._hosts_scripts = False
        self._host_starter = HostStarter()
        """Whether this worker keeps such a process ready after each reset (a pool's, or one that ran a script)."""
        self._fresh = ProcessState.capture()
        """The process as Ray started it: what `reset` puts back before the worker serves another job."""
        # the actor's constructor runs on the process's main thread, the only one that may install handlers
        self._ray_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Optional[FrameType]) -> None:
        """SIGTERM is what Kubernetes sends a pod before it evicts it: while a rank trains, tell the driver (it
        stops the ranks at a checkpoint and continues without this node); otherwise, or the second time, exit as
        Ray's own handler does."""
        spec, running = self._spec, self._thread is not None and self._thread.is_alive()
        if spec is None or not running or self._noticed:
            previous = self._ray_sigterm
            if callable(previous):
                previous(signum, frame)
            raise SystemExit(128 + signum)
        self._noticed = True
        # SimpleQueue.put is safe in a signal handler (it never blocks on a lock another frame holds)
        self._outbox.put(PreemptionNotice(world_rank=spec.world_rank, node_ip=spec.node_ip))

    def node_ip(self) -> str:
        """The Ray node IP this actor runs on."""
        import ray

        return ray.util.get_node_ip_address()

    def free_port(self) -> int:
        """A TCP port free on this node right now, for MASTER_PORT."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("", 0))
            return probe.getsockname()[1]

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def gpu_ids(self) -> list[str]:
        """The GPU ids Ray assigned to this actor (as in its CUDA_VISIBLE_DEVICES)."""
        import ray

        return [str(gpu) for gpu in ray.get_runtime_context().get_accelerator_ids().get("GPU", [])]

    def warm(self, job: JobConfig) -> None:
        """Load what a rank of the built-in loop needs (torch, the loop) and, for a CPU job, build its data set,
        so that a spare takes over a rank at once; for a script job, start the script's process ahead instead."""
        if job.entrypoint == "script":
            if job.script.warm_start:
                self._hosts_scripts = True
                self._ready_script_host()
            return
        from orchestrator.train.components import warm_up

        warm_up()
        self._fresh.capture_torch()  # torch as it is imported, before any job's code changes its settings
        from orchestrator.train.loop import WorkerCache, prepare_data

        if self._cache is None:
            self._cache = WorkerCache()
        if job.scaling.gpus_per_worker == 0:  # a GPU's device (and so its copy of the data) is known at start only
            import torch

            prepare_data(job, self._cache, torch.device("cpu"))

    def preload(self) -> None:
        """Load torch and the training loop before any job comes (a pool's worker): what a fresh rank loads first;
        and start a script's process ahead, for a script job."""
        from orchestrator.train.components import warm_up

        warm_up()
        self._fresh.capture_torch()
        self._hosts_scripts = True
        self._ready_script_host()

    def _ready_for_restart(self, spec: WorkerSpec, job: JobConfig) -> None:
        """The rank's script failed or was stopped, and a restart will likely run it again here: start its next
        process now, with the rank's environment (before the result is queued, so before the next `start`)."""
        from orchestrator.worker.script import script_environment

        self._ready_script_host(script_environment(spec, job))

    def _ready_script_host(self, environ: Optional[Mapping[str, str]] = None) -> None:
        """A started script process waiting in this worker (one with `environ`, default the actor's environment)."""
        # the actor's environment is as Ray made it: a pool's job sets its own variables at its attempt, and a
        # host that started with other values of those read at start is not used (see ScriptHost.takes)
        if self._script_host is not None and self._script_host.alive():
            return
        if self._script_host is not None:  # it died: reap it and release its pipes
            self._script_host.close()
        self._script_host = self._host_starter.start(environ)

    def stop(self) -> None:
        """Ask the running rank to stop at the next step the ranks agree on."""
        self._stop.set()

    def start(
        self,
        spec: WorkerSpec,
        job: JobConfig,
        checkpoint_dir: str,
        resume_from: Optional[str] = None,
        run_id: Optional[str] = None,
        env_vars: Optional[dict[str, str]] = None,
    ) -> None:
        """Start an attempt of the rank on a thread of its own; its reports queue up for `reports()`.

        `env_vars` are the job's runtime_env variables for a worker that was started without them (a pool's): set
        in this process (a PYTHONPATH also on sys.path) until `reset`."""
        from orchestrator.worker.entry import Attempt

        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the previous attempt of this worker is still running")
        for name, value in (env_vars or {}).items():
            os.environ[name] = value
            if name == "PYTHONPATH":
                sys.path[:0] = [part for part in value.split(os.pathsep) if part and part not in sys.path]
        if self._cache is None and job.entrypoint == "builtin":
            # only the built-in loop needs it: importing it imports torch, which a script's worker never needs
            # (the script imports its own, in its own process)
            from orchestrator.train.loop import WorkerCache

            self._cache = WorkerCache()
        if "torch" in sys.modules:  # the entry imports torch for the built-in loop; a script's worker has none
            self._fresh.capture_torch()
        host = None
        if job.entrypoint == "script" and job.script.warm_start:
            host, self._script_host = self._script_host, None
            self._hosts_scripts = True  # the next job on this worker (a sweep's next trial) is likely a script too
        attempt = Attempt(
            checkpoint_dir=Path(checkpoint_dir),
            cache=self._cache,
            resume_from=Path(resume_from) if resume_from else None,
            run_id=run_id,
            script_host=host,
        )
        self._stop = StopSignal()
        self._outbox = queue.SimpleQueue()
        self._spec = spec
        self._thread = threading.Thread(
            target=self._train, args=(spec, job, attempt, self._outbox), name=f"rank-{spec.world_rank}", daemon=True
        )
        self._thread.start()

    def reset(self) -> int:
        """Make this worker a fresh one for another job (a sweep's next trial): the process state as Ray started
        it (see orchestrator.worker.process_state), no cached data set or model, no stop asked. Returns how
        many of the user's modules it forgot. Only between attempts."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the worker's attempt is still running: it cannot be reset")
        self._thread, self._cache, self._spec, self._noticed = None, None, None, False
        self._stop = StopSignal()
        self._outbox = queue.SimpleQueue()
        forgotten = len(self._fresh.restore())
        if self._hosts_scripts:  # after the restore: the host starts from the environment as Ray made it
            self._ready_script_host()
        return forgotten

    def reports(self, timeout_s: float) -> ReportBatch:
        """Queued reports: waits up to `timeout_s` for the first, then takes whatever else is queued."""
        try:
            batch = [self._outbox.get(timeout=timeout_s)]
        except queue.Empty:
            return ReportBatch(reports=[], done=False)
        while len(batch) < MAX_BATCH:
            try:
                batch.append(self._outbox.get_nowait())
            except queue.Empty:
                break
        done = batch[-1] is _END
        if done:
            assert self._thread is not None  # _END comes from the attempt's thread, which start() made
            self._thread.join()
        return ReportBatch(reports=[item for item in batch if item is not _END], done=done)

    def _train(self, spec: WorkerSpec, job: JobConfig, attempt: Attempt, outbox: queue.SimpleQueue[object]) -> None:
        from orchestrator.worker.entry import run_worker

        try:
            result = run_worker(spec, job, outbox.put, self._stop, attempt)
            if job.entrypoint == "script" and job.script.warm_start and not _finished(result):
                self._ready_for_restart(spec, job)
            outbox.put(result)
        except BaseException as error:  # report everything, user code included, with its traceback
            outbox.put(
                ErrorReport(
                    world_rank=spec.world_rank,
                    node_ip=spec.node_ip,
                    error_type=type(error).__name__,
                    message=str(error),
                    traceback=traceback.format_exc(),
                )
            )
        finally:
            outbox.put(_END)


def _finished(result: object) -> bool:
    """Whether a rank's result ends its job's training (neither an error nor a stop at the driver's request)."""
    return isinstance(result, ResultReport) and not result.stopped


ACTOR_CONCURRENCY = 4
"""reports(), stop() and the probes must be able to run at the same time on one actor."""


def start_worker(
    resources: Mapping[str, float],
    placement_group: Any,
    bundle_index: int,
    name: str,
    runtime_env: Optional[dict[str, Any]] = None,
) -> "WorkerHandle":
    """Start a WorkerActor holding `resources` in bundle `bundle_index` of `placement_group` (a job's or a pool's);
    it does not restart when it dies (its owner replaces it)."""
    import ray
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    rest = dict(resources)
    handle = (
        ray.remote(WorkerActor)
        .options(
            num_cpus=rest.pop("CPU", 0.0),
            num_gpus=rest.pop("GPU", 0.0),
            memory=rest.pop("memory", None),
            resources=rest,
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=placement_group, placement_group_bundle_index=bundle_index
            ),
            max_concurrency=ACTOR_CONCURRENCY,
            max_restarts=0,
            name=name,
            # cluster.runtime_env reaches the ranks (and a script's process) here: the job's env_vars, secrets
            # included, travel through Ray and are written nowhere by the driver
            **({"runtime_env": runtime_env} if runtime_env else {}),
        )
        .remote()
    )
    # Ray's stubs type the result as the handle or the class, with untyped methods
    return cast("WorkerHandle", handle)


if TYPE_CHECKING:

    class WorkerHandle(ActorHandle[WorkerActor]):
        """A WorkerActor's handle, as the worker group calls it (see launchers/actor_handles.py)."""

        node_ip: RemoteMethod[[], str]
        free_port: RemoteMethod[[], int]
        pid: RemoteMethod[[], int]
        gpu_ids: RemoteMethod[[], list[str]]
        stop: RemoteMethod[[], None]
        warm: RemoteMethod[[JobConfig], None]
        reset: RemoteMethod[[], int]
        preload: RemoteMethod[[], None]
        start: RemoteMethod[[WorkerSpec, JobConfig, str, Optional[str], Optional[str], Optional[dict[str, str]]], None]
        reports: RemoteMethod[[float], ReportBatch]
