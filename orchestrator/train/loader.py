"""The user's data sets through a real DataLoader: each rank's share, resumable at any optimizer step.

The order is DistributedSampler's seeded permutation, as for the in-memory sets: the union of the
ranks' i-th batches is the i-th global batch whatever the world size. A resumed epoch starts at the
checkpoint's global position (samples taken in the epoch), so the samples before it are not even
loaded, and a different world size continues from the same sample.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterator, Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler, Subset

from orchestrator.train.data import RankShare, StepBatches
from orchestrator.train.evaluate import lockstep_padding
from orchestrator.train.precision import autocast
from orchestrator.train.step import Step, scalar_metrics


class _EpochBatches(Sampler[list[int]]):
    """The micro-batches (index lists) of the current epoch from the current position; set before each epoch's
    iterator. The loader's batch_sampler: a plan may split a step into micro-batches of unequal sizes.

    One sampler object for the loader's whole life keeps `persistent_workers` worth having: the worker
    processes survive from epoch to epoch while the main process deals them new indices.
    """

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


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

    def __init__(
        self,
        dataset: Any,
        world_size: int,
        world_rank: int,
        batch_size: int,
        accum_steps: int,
        seed: int,
        num_workers: int,
        device: torch.device,
        global_batch: Optional[int] = None,
    ):
        # `dataset`: the user's map-style data set (__getitem__ and __len__; a torch Dataset or not)
        super().__init__(len(dataset), world_size, world_rank, batch_size, accum_steps, seed, global_batch)
        self.device = device
        self.sampler = _EpochBatches()
        self.loader: Optional[DataLoader] = DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            generator=torch.Generator().manual_seed(seed),
        )

    def close(self) -> None:
        """End the loader's worker processes now. The trainer and its checkpoint writer refer to each other, so
        without this they would live until a cyclic garbage collection; the last reference to the loader (and
        so to its persistent iterator, whose finalizer stops the workers) goes here."""
        self.loader = None

    def epoch(self, epoch: int, start: int = 0) -> Iterator[StepBatches]:
        """Yield each optimizer step's micro-batches, from global position `start`.

        A micro-batch is what the loader collated: [inputs, targets] for (inputs, targets) items, else
        whatever shape the items have (dicts, ...), for trainer.step_fn.
        """
        if self.loader is None:
            raise RuntimeError("LoaderBatches.epoch after close()")
        plan = self.epoch_plan(epoch, start)
        self.sampler.batches = [part for step in plan for part in step.micro_batches]
        loaded = iter(self.loader)
        for step in plan:
            micro_batches = [
                to_device(batch, self.device) for batch in itertools.islice(loaded, len(step.micro_batches))
            ]
            yield StepBatches(micro_batches, step.weights)


@torch.no_grad()
def evaluate_dataset(
    module: torch.nn.Module,
    dataset: Any,
    step: Step,
    world_rank: int,
    world_size: int,
    batch_size: int,
    amp: str,
    device: torch.device,
    lockstep: bool = False,
) -> dict[str, float]:
    """eval/loss over every sample exactly once (rank r takes samples r, r+W, ...), plus eval/accuracy when the
    outputs are class logits for integer targets, or eval/<key> for each metric trainer.step_fn returns. With
    `lockstep` (FSDP) a rank with fewer batches runs uncounted steps on the first sample to match the others."""
    was_training = module.training
    module.eval()
    sums: dict[str, torch.Tensor] = {}  # per key: [sum of value x samples, samples]
    shard = Subset(dataset, range(world_rank, len(dataset), world_size))
    loader = DataLoader(shard, batch_size=batch_size, pin_memory=device.type == "cuda")
    if lockstep and len(dataset):
        from torch.utils.data import default_collate

        for _ in range(lockstep_padding(len(loader), len(dataset), world_size, batch_size)):
            with autocast(device, amp):
                step.evaluate(module, to_device(default_collate([dataset[0]]), device))
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, amp):
            loss, metrics = step.evaluate(module, batch)
        samples = batch_size_of(batch)
        for key, value in {**scalar_metrics(metrics, step), "loss": loss}.items():
            pair = torch.stack(
                [
                    value.detach().double().reshape(()).to(device) * samples,
                    torch.tensor(float(samples), dtype=torch.float64, device=device),
                ]
            )
            sums[key] = sums[key] + pair if key in sums else pair
    keys = sorted(sums)
    if world_size > 1:
        keys = _all_keys(keys, world_size)  # a rank with an empty shard has none of its own
        zero = torch.zeros(2, dtype=torch.float64, device=device)
        totals = torch.stack([sums.get(key, zero) for key in keys])
        dist.all_reduce(totals)
        sums = dict(zip(keys, totals))
    module.train(was_training)
    return {f"eval/{key}": (sums[key][0] / sums[key][1]).item() for key in keys if sums[key][1] > 0}


def _all_keys(keys: list[str], world_size: int) -> list[str]:
    gathered: list = [None] * world_size
    dist.all_gather_object(gathered, keys)
    return sorted(set().union(*gathered))


def first_inputs(dataset: Any, count: int = 4) -> Optional[Any]:
    """The inputs of the data set's first `count` items, batched (the logged model's input example)."""
    from torch.utils.data import default_collate

    if dataset is None or len(dataset) == 0:
        return None
    batch = default_collate([dataset[index] for index in range(min(count, len(dataset)))])
    if not (isinstance(batch, (list, tuple)) and len(batch) == 2):
        return None  # items that are not (inputs, targets): the model's inputs are known to step_fn only
    return batch[0]
