"""What one rank runs: its environment, its device, the process group, then the training loop."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from orchestrator.config.schema import JobConfig
from orchestrator.reports import ResultReport
from orchestrator.rendezvous import WorkerSpec
from orchestrator.train.loop import TrainContext, train
from orchestrator.worker.ddp import pin_socket_interface, process_group


def select_device(spec: WorkerSpec) -> torch.device:
    """The rank's own GPU (CUDA_VISIBLE_DEVICES lists the node's job GPUs in local-rank order), else cpu."""
    if spec.cuda_device is not None:
        device = torch.device("cuda", spec.cuda_device)
        torch.cuda.set_device(device)
        return device
    return torch.device("cpu")


def run_worker(spec: WorkerSpec, job: JobConfig, emit: Callable[[object], None],
               stop_requested: Callable[[], bool], checkpoint_dir: Path) -> ResultReport:
    """Run this rank of the job to its end and return its result."""
    os.environ.update(spec.env)
    pin_socket_interface(spec.node_ip)
    torch.set_num_threads(spec.torch_threads)
    device = select_device(spec)
    with process_group(spec, device, job.scaling.rendezvous_timeout_s):
        context = TrainContext(spec=spec, device=device, emit=emit, stop_requested=stop_requested,
                               checkpoint_dir=checkpoint_dir)
        return train(job, context)
