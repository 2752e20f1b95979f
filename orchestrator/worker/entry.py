"""What one rank runs: its environment, its device, then the built-in loop or the user's script."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Union

from orchestrator.config.schema import JobConfig
from orchestrator.lifecycle.rank_reports import ErrorReport, ResultReport
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.worker.script_host import ScriptHost
from orchestrator.worker.stop import StopSignal

if TYPE_CHECKING:  # only types here: a script's worker never imports torch
    import torch

    from orchestrator.train.loop import WorkerCache


def select_device(spec: WorkerSpec) -> torch.device:
    """The rank's own GPU (CUDA_VISIBLE_DEVICES lists the node's job GPUs in local-rank order), else cpu."""
    import torch

    if spec.cuda_device is not None:
        device = torch.device("cuda", spec.cuda_device)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


@dataclass(frozen=True)
class Attempt:
    """One run of a rank: where checkpoints go, the checkpoint to resume from, the process's cache."""

    checkpoint_dir: Path
    resume_from: Optional[Path] = None
    cache: Optional[WorkerCache] = None
    """What the worker process keeps across attempts (None: a fresh one)."""
    run_id: Optional[str] = None
    """The MLflow run the job records into (a script reads it from orchestrator.context())."""
    script_host: Optional[ScriptHost] = None
    """A script's process started ahead (torch imported) for this attempt's script; ended here if not taken."""


def run_worker(
    spec: WorkerSpec, job: JobConfig, emit: Callable[[object], None], stop: StopSignal, attempt: Attempt
) -> Union[ResultReport, ErrorReport]:
    """Run this rank of the job to its end and return its result."""
    if job.entrypoint == "script":
        from orchestrator.worker.script import ScriptAttempt, run_script

        resume_from = str(attempt.resume_from) if attempt.resume_from else None
        try:
            return run_script(
                spec,
                job,
                emit,
                stop,
                ScriptAttempt(str(attempt.checkpoint_dir), resume_from, attempt.run_id),
                attempt.script_host,
            )
        finally:
            if attempt.script_host is not None:  # a no-op for a host the script took: its run waited for it
                attempt.script_host.close()
    return _run_builtin(spec, job, emit, stop, attempt)


def _run_builtin(
    spec: WorkerSpec, job: JobConfig, emit: Callable[[object], None], stop: StopSignal, attempt: Attempt
) -> ResultReport:
    import torch

    from orchestrator.train.loop import TrainContext, WorkerCache, train
    from orchestrator.worker.ddp import process_group
    from orchestrator.worker.network import pin_socket_interface

    os.environ.update(spec.env)
    pin_socket_interface(spec.node_ip)
    torch.set_num_threads(spec.torch_threads)
    device = select_device(spec)
    started = time.perf_counter()
    with process_group(spec, device, job.scaling.rendezvous_timeout_s):
        context = TrainContext(
            spec=spec,
            device=device,
            emit=emit,
            stop_requested=stop.is_set,
            checkpoint_dir=attempt.checkpoint_dir,
            resume_from=attempt.resume_from,
            cache=attempt.cache if attempt.cache is not None else WorkerCache(),
            timings={"process_group": time.perf_counter() - started},
        )
        return train(job, context)
