"""The Ray actor that hosts one rank: the one place worker processes are started from."""

from __future__ import annotations

import os
import queue
import socket
import threading
import traceback
from pathlib import Path
from typing import Iterator

from orchestrator.config.schema import JobConfig
from orchestrator.reports import ErrorReport
from orchestrator.rendezvous import WorkerSpec

_END = object()
MAX_BATCH = 256


class WorkerActor:
    """One rank's process. `run` streams the rank's reports to the driver as a Ray generator.

    Training runs on a thread of its own and hands reports to a local queue, so the loop never
    waits for the driver; the generator side yields them as they come.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()

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

    def stop(self) -> None:
        """Ask the running rank to stop at the next step the ranks agree on."""
        self._stop.set()

    def run(self, spec: WorkerSpec, job: JobConfig, checkpoint_dir: str) -> Iterator[list]:
        """Run the rank to its end, yielding lists of reports; the last is a ResultReport or ErrorReport."""
        self._stop.clear()
        outbox: queue.SimpleQueue = queue.SimpleQueue()
        thread = threading.Thread(target=self._train, args=(spec, job, Path(checkpoint_dir), outbox),
                                  name=f"rank-{spec.world_rank}", daemon=True)
        thread.start()
        finished = False
        while not finished:
            batch = [outbox.get()]
            # whatever else is already queued travels in the same message: one yield per burst
            while not outbox.empty() and len(batch) < MAX_BATCH:
                batch.append(outbox.get())
            finished = batch[-1] is _END
            reports = [item for item in batch if item is not _END]
            if reports:
                yield reports
        thread.join()

    def _train(self, spec: WorkerSpec, job: JobConfig, checkpoint_dir: Path, outbox: queue.SimpleQueue) -> None:
        from orchestrator.worker.entry import run_worker

        try:
            outbox.put(run_worker(spec, job, outbox.put, self._stop.is_set, checkpoint_dir))
        except BaseException as error:  # report everything, user code included, with its traceback
            outbox.put(ErrorReport(world_rank=spec.world_rank, node_ip=spec.node_ip, error_type=type(error).__name__,
                                   message=str(error), traceback=traceback.format_exc()))
        finally:
            outbox.put(_END)
