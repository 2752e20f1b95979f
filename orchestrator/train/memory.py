"""What a rank's memory holds: its peak, and the model state (parameters and optimizer state) it keeps.

The peak is the device's: CUDA's max allocated on a GPU, the process's peak resident set on the CPU.
The model state is counted from the tensors this rank holds (a shard under FSDP, a replica under DDP),
so it shows what sharding saves without the allocator's or the interpreter's share.
"""

from __future__ import annotations

import resource
import sys

import torch

MIB = 1024 * 1024
PER_RANK_LIMIT = 64
"""Up to this many ranks every rank's memory is a metric of its own; beyond, the largest of all ranks only."""


def peak_bytes(device: torch.device) -> float:
    """This rank's peak memory so far: CUDA max allocated on `device`, else the process's peak RSS."""
    if device.type == "cuda":
        return float(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak if sys.platform == "darwin" else peak * 1024)  # Linux counts KiB, macOS bytes


def model_state_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
    """Bytes of the parameters and optimizer state this rank holds (its shards under FSDP)."""
    total = sum(_local(parameter).nbytes for parameter in module.parameters())
    for state in optimizer.state.values():
        total += sum(_local(value).nbytes for value in state.values() if isinstance(value, torch.Tensor))
    return float(total)


def _local(tensor: torch.Tensor) -> torch.Tensor:
    # a DTensor's own shard; a plain tensor is all local
    to_local = getattr(tensor, "to_local", None)
    return to_local() if callable(to_local) else tensor


def memory_metrics(peaks: list[float], model_states: list[float], per_rank: bool = True) -> dict[str, float]:
    """Metrics of the ranks' memory: the largest over the ranks and, if `per_rank`, each rank's (list index =
    world rank; without `per_rank` the lists may hold only the largest values)."""
    metrics = {
        "memory/max_peak_mib": max(peaks) / MIB,
        "memory/max_model_state_mib": max(model_states) / MIB,
    }
    if per_rank:
        for rank, (peak, state) in enumerate(zip(peaks, model_states)):
            metrics[f"memory/rank{rank}/peak_mib"] = peak / MIB
            metrics[f"memory/rank{rank}/model_state_mib"] = state / MIB
    return metrics
