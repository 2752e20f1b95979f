"""The only place a process group is created and destroyed."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

from orchestrator.planning.rank_specs import WorkerSpec


@contextlib.contextmanager
def process_group(spec: WorkerSpec, device: torch.device, timeout_s: float) -> Iterator[None]:
    """Join the job's process group through MASTER_ADDR/MASTER_PORT, and always leave it."""
    # NCCL binds the group to the rank's GPU; gloo takes no device (None is init_process_group's default)
    dist.init_process_group(
        backend=spec.backend,
        init_method="env://",
        rank=spec.world_rank,
        world_size=spec.world_size,
        timeout=timedelta(seconds=timeout_s),
        device_id=device if spec.backend == "nccl" else None,
    )
    try:
        yield
    finally:
        dist.destroy_process_group()
