"""The user's data sets through a real DataLoader: each rank's share, resumable at any optimizer step.

The order is DistributedSampler's seeded permutation, as for the in-memory sets: the union of the
ranks' i-th batches is the i-th global batch whatever the world size. A resumed epoch starts its
sampler at the checkpoint's step, so the samples before it are not even loaded, and the position
needs nothing in the checkpoint beyond (epoch, steps_in_epoch).
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler, Subset

from orchestrator.train.components import LossFn
from orchestrator.train.data import RankShare
from orchestrator.train.precision import autocast


class _EpochIndices(Sampler[int]):
    """The indices of the current epoch from the current position; set before each epoch's iterator.

    One sampler object for the loader's whole life keeps `persistent_workers` worth having: the worker
    processes survive from epoch to epoch while the main process deals them new indices.
    """

    def __init__(self) -> None:
        self.indices: list[int] = []

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def to_device(value: Any, device: torch.device) -> Any:
    """Tensors of a batch (also inside tuples, lists and dicts) on `device`; non-blocking from pinned memory."""
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=device.type == "cuda")
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(item, device) for item in value)
    if isinstance(value, dict):
        return {key: to_device(item, device) for key, item in value.items()}
    return value


def batch_size_of(targets: Any) -> int:
    """Samples in a batch, read from its targets (the first tensor found)."""
    if isinstance(targets, torch.Tensor):
        return int(targets.shape[0]) if targets.dim() else 1
    if isinstance(targets, (list, tuple)) and targets:
        return batch_size_of(targets[0])
    if isinstance(targets, dict) and targets:
        return batch_size_of(next(iter(targets.values())))
    return 1


class LoaderBatches(RankShare):
    """This rank's micro-batches of a map-style data set, grouped per optimizer step (as ShardedBatches)."""

    def __init__(self, dataset, world_size: int, world_rank: int, batch_size: int, accum_steps: int, seed: int,
                 num_workers: int, device: torch.device):
        super().__init__(len(dataset), world_size, world_rank, batch_size, accum_steps, seed)
        self.device = device
        self.indices = _EpochIndices()
        self.loader: Optional[DataLoader] = DataLoader(dataset, batch_size=batch_size, sampler=self.indices, num_workers=num_workers,
                                 pin_memory=device.type == "cuda", persistent_workers=num_workers > 0,
                                 generator=torch.Generator().manual_seed(seed))

    def close(self) -> None:
        """End the loader's worker processes now. The trainer and its checkpoint writer refer to each other, so
        without this they would live until a cyclic garbage collection; the last reference to the loader (and
        so to its persistent iterator, whose finalizer stops the workers) goes here."""
        self.loader = None

    def epoch(self, epoch: int, skip_steps: int = 0) -> Iterator[list[tuple[Any, Any]]]:
        """Yield one list of (inputs, targets) micro-batches per optimizer step, after `skip_steps`."""
        self.sampler.set_epoch(epoch)
        self.indices.indices = list(iter(self.sampler))[skip_steps * self.batch_size * self.accum_steps:]
        step: list[tuple[Any, Any]] = []
        if self.loader is None:
            raise RuntimeError("LoaderBatches.epoch after close()")
        for inputs, targets in self.loader:
            step.append((to_device(inputs, self.device), to_device(targets, self.device)))
            if len(step) == self.accum_steps:
                yield step
                step = []
        if step:
            yield step


@torch.no_grad()
def evaluate_dataset(module: torch.nn.Module, dataset, loss_fn: LossFn, world_rank: int, world_size: int,
                     batch_size: int, amp: str, device: torch.device) -> dict[str, float]:
    """eval/loss over every sample exactly once (rank r takes samples r, r+W, ...) and, when the outputs are
    class logits for integer targets, eval/accuracy."""
    was_training = module.training
    module.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, samples, correct, predictions
    shard = Subset(dataset, range(world_rank, len(dataset), world_size))
    for inputs, targets in DataLoader(shard, batch_size=batch_size, pin_memory=device.type == "cuda"):
        inputs, targets = to_device(inputs, device), to_device(targets, device)
        with autocast(device, amp):
            outputs = module(inputs)
        samples = batch_size_of(targets)
        totals[0] += loss_fn(_as_float(outputs), targets).double() * samples
        totals[1] += samples
        if _class_logits(outputs, targets):
            totals[2] += (outputs.argmax(dim=-1) == targets).sum()
            totals[3] += targets.numel()
    if world_size > 1:
        dist.all_reduce(totals)
    module.train(was_training)
    loss_sum, samples, correct, predictions = totals.tolist()
    metrics = {"eval/loss": loss_sum / samples}
    if predictions:
        metrics["eval/accuracy"] = correct / predictions
    return metrics


def _as_float(outputs: Any) -> Any:
    return outputs.float() if isinstance(outputs, torch.Tensor) and outputs.is_floating_point() else outputs


def _class_logits(outputs: Any, targets: Any) -> bool:
    return (isinstance(outputs, torch.Tensor) and isinstance(targets, torch.Tensor)
            and not targets.is_floating_point() and outputs.dim() == targets.dim() + 1
            and outputs.shape[:-1] == targets.shape)


def first_inputs(dataset, count: int = 4) -> Optional[Any]:
    """The inputs of the data set's first `count` items, batched (the logged model's input example)."""
    from torch.utils.data import default_collate

    if dataset is None or len(dataset) == 0:
        return None
    inputs, _ = default_collate([dataset[index] for index in range(min(count, len(dataset)))])
    return inputs
