"""In-memory data sets and each rank's share of them, batch by batch."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import torch

from orchestrator.config.schema import DataConfig, SyntheticConfig, TokensConfig, data_num_classes

SUCCESSORS = 4
"""Tokens that may follow each token in the synthetic chain: a model that learns the chain reaches a loss
near the chain's entropy (under log 4 nats), far below the log(vocab_size) of guessing."""


@dataclass(frozen=True)
class Dataset:
    """Train and test tensors plus what a model needs to know about them."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int


def load_dataset(data: DataConfig, seed: int) -> Dataset:
    """The configured data set, split into train/test by `seed` (identical on every rank)."""
    if isinstance(data, SyntheticConfig):
        inputs, labels = _synthetic(data, seed)
    elif isinstance(data, TokensConfig):
        inputs, labels = _tokens(data, seed)
    else:
        inputs, labels = _digits()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(labels), generator=generator)
    num_test = max(1, int(round(len(labels) * data.test_fraction)))
    test, train = order[:num_test], order[num_test:]
    return Dataset(
        train_x=inputs[train].contiguous(),
        train_y=labels[train].contiguous(),
        test_x=inputs[test].contiguous(),
        test_y=labels[test].contiguous(),
        input_shape=tuple(inputs.shape[1:]),
        num_classes=data_num_classes(data),
    )


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # pixels are 0..16 in the bundled set; scale to [0, 1] and add the channel axis
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return images, torch.tensor(bunch.target, dtype=torch.long)


def _synthetic(data: SyntheticConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + 1)
    inputs = torch.randn((data.num_samples, *data.input_shape), generator=generator)
    features = inputs.flatten(1)
    # a fixed random two-layer teacher makes the labels a learnable, non-linear function of the input
    hidden = torch.tanh(features @ torch.randn(features.shape[1], 64, generator=generator))
    labels = (hidden @ torch.randn(64, data.num_classes, generator=generator)).argmax(dim=1)
    return inputs, labels


def _tokens(data: TokensConfig, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences walked through a fixed random chain; inputs are tokens 0..T-1, labels tokens 1..T."""
    generator = torch.Generator().manual_seed(seed + 1)
    vocab = data.vocab_size
    successors = torch.randint(0, vocab, (vocab, SUCCESSORS), generator=generator)
    weights = torch.softmax(torch.randn(vocab, SUCCESSORS, generator=generator), dim=1)
    sequences = torch.empty((data.num_sequences, data.seq_len + 1), dtype=torch.long)
    sequences[:, 0] = torch.randint(0, vocab, (data.num_sequences,), generator=generator)
    for position in range(1, data.seq_len + 1):
        previous = sequences[:, position - 1]
        choice = torch.multinomial(weights[previous], 1, generator=generator).squeeze(1)
        sequences[:, position] = successors[previous, choice]
    return sequences[:, :-1], sequences[:, 1:]


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; to a GPU through pinned memory, so the copy is one DMA that does not stall the host."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


@dataclass(frozen=True)
class StepBatches:
    """One optimizer step of one rank: its micro-batches (index lists in a plan, loaded data in an epoch) and
    the weight of each micro-batch's mean loss in the step's gradient.

    `weights` None: each counts 1 / len(micro_batches) (every rank takes the same number of full micro-batches).
    Otherwise micro-batch i of n_i samples counts n_i x W / (samples of the step over all W ranks): DDP and
    FSDP average the ranks' gradients, so the step's gradient is the mean over its samples, whatever the split.
    A weight of 0.0 marks a stand-in (one sample of the step) that a rank with a smaller share runs only to
    keep the ranks' forwards and backwards in lockstep; it adds nothing to the gradient or the logged loss.
    """

    micro_batches: list[Any]
    weights: Optional[tuple[float, ...]] = None

    def weighted(self, loss: Any, index: int) -> Any:
        """Micro-batch `index`'s mean `loss` as it enters the step's gradient."""
        return loss / len(self.micro_batches) if self.weights is None else loss * self.weights[index]

    def counts(self, index: int) -> bool:
        """Whether micro-batch `index` holds samples of the step (not a stand-in)."""
        return self.weights is None or self.weights[index] > 0.0


class RankShare:
    """This rank's share of a data set of `num_items`, counted in micro-batches and optimizer steps (the same
    counts on every rank), from any global position in an epoch.

    An epoch's order is a permutation fixed by seed + epoch. Every optimizer step takes the next `global_batch`
    samples G of that order (default W x B, B = batch_size x accum_steps), so a position in samples means the
    same under any world size: a checkpoint of W ranks continues on W' ranks with every sample of the epoch
    seen once.

    When G = W x B each rank takes B samples per step in accum_steps micro-batches, exactly DistributedSampler's
    batches (the order's tail padded with its start to a multiple of W, dealt round robin). Otherwise (a job
    kept its global batch on another world size) step k deals the slice [start + kG, start + (k+1)G) of the
    unpadded order round robin and every rank splits its share into the same number of micro-batches of at
    most batch_size, weighted by their sizes (StepBatches.weights): the step's gradient is the mean over the
    slice's samples, as on any other world size.
    """

    def __init__(
        self,
        num_items: int,
        world_size: int,
        world_rank: int,
        batch_size: int,
        accum_steps: int,
        seed: int,
        global_batch: Optional[int] = None,
    ):
        self.num_items = num_items
        self.world_size = world_size
        self.world_rank = world_rank
        self.batch_size = batch_size
        self.accum_steps = accum_steps
        self.seed = seed
        self.global_batch = world_size * batch_size * accum_steps if global_batch is None else global_batch

    @property
    def global_step_samples(self) -> int:
        """Samples one optimizer step takes from the epoch's order, over all ranks."""
        return self.global_batch

    @property
    def dealt_whole(self) -> bool:
        """Whether a step is accum_steps full micro-batches on every rank (G = W x batch_size x accum_steps)."""
        return self.global_batch == self.world_size * self.batch_size * self.accum_steps

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_items, generator=generator).tolist()

    def epoch_indices(self, epoch: int, start: int = 0) -> list[int]:
        """This rank's indices of epoch `epoch` from global position `start` (samples already taken)."""
        if not self.dealt_whole:
            return [index for share, _, _ in self._shares(epoch, start) for index in share]
        order = self._order(epoch)
        rest = order[start:]
        padding = -len(rest) % self.world_size
        rest += (order * -(-padding // max(len(order), 1)))[:padding]
        return rest[self.world_rank :: self.world_size]

    def _shares(self, epoch: int, start: int) -> Iterator[tuple[list[int], int, int]]:
        """Per step from `start`: this rank's share of the step's slice, the slice's length and its first item.

        No padding: unequal shares already run in lockstep (stand-ins), so every sample counts exactly once.
        """
        rest, size = self._order(epoch)[start:], self.global_batch
        for first in range(0, len(rest), size):
            piece = rest[first : first + size]
            yield piece[self.world_rank :: self.world_size], len(piece), piece[0]

    def epoch_plan(self, epoch: int, start: int = 0) -> list[StepBatches]:
        """This rank's optimizer steps of epoch `epoch` from global position `start`, as micro-batches of indices."""
        if self.dealt_whole:
            indices, size = self.epoch_indices(epoch, start), self.batch_size
            per_step = size * self.accum_steps
            return [
                StepBatches([chunk[part : part + size] for part in range(0, len(chunk), size)])
                for chunk in (indices[step : step + per_step] for step in range(0, len(indices), per_step))
            ]
        plan = []
        for share, slice_size, first in self._shares(epoch, start):
            # every rank runs as many micro-batches as the largest share needs (FSDP's forwards are collectives)
            parts = -(-(-(-slice_size // self.world_size)) // self.batch_size)
            sizes = [len(share) // parts + (part < len(share) % parts) for part in range(parts)]
            bounds = [0, *itertools.accumulate(sizes)]
            micro_batches = [share[low:high] or [first] for low, high in zip(bounds, bounds[1:])]
            weights = tuple(size * self.world_size / slice_size for size in sizes)
            plan.append(StepBatches(micro_batches, weights))
        return plan

    def steps_from(self, start: int) -> int:
        """Optimizer steps left in an epoch at global position `start` (the last may be short)."""
        return -(-max(self.num_items - start, 0) // self.global_batch)

    @property
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches this rank runs per epoch (the same on every rank)."""
        if self.dealt_whole:
            per_rank = -(-self.num_items // self.world_size)
            return -(-per_rank // self.batch_size)
        return sum(len(step.micro_batches) for step in self.epoch_plan(0))

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per whole epoch (the last may be short)."""
        return self.steps_from(0)

    def position_after(self, start: int, steps: int) -> int:
        """The global position after `steps` optimizer steps from `start` (past the data's end once the epoch
        is done, when the sampler's padding counts)."""
        rest = max(self.num_items - start, 0)
        if self.dealt_whole:
            rest = self.world_size * -(-rest // self.world_size)
        return start + min(steps * self.global_batch, rest)


class ShardedBatches(RankShare):
    """This rank's micro-batches, grouped per optimizer step, in a global order fixed by the seed.

    DistributedSampler deals the same seeded permutation to every rank (rank r takes every
    world_size-th index), so the union of the ranks' i-th batches is the i-th global batch whatever
    the world size: 2 workers with batch b see the data a single worker with batch 2b sees.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        labels: torch.Tensor,
        world_size: int,
        world_rank: int,
        batch_size: int,
        accum_steps: int,
        seed: int,
        global_batch: Optional[int] = None,
    ):
        # inputs and labels live where the model runs (the whole set is moved once, see loop._on_device):
        # each micro-batch is then one gather on the device, with no per-step host-to-device copy
        super().__init__(len(labels), world_size, world_rank, batch_size, accum_steps, seed, global_batch)
        self.inputs = inputs
        self.labels = labels

    def epoch(self, epoch: int, start: int = 0) -> Iterator[StepBatches]:
        """Yield each optimizer step's (inputs, labels) micro-batches, from global position `start`."""
        plan = self.epoch_plan(epoch, start)
        if not plan:
            return
        flat = [index for step in plan for part in step.micro_batches for index in part]
        # the epoch's order goes to the device once: indexing a GPU tensor with CPU indices would copy them
        # (from pageable memory, synchronously) on every micro-batch
        indices = to_device(torch.tensor(flat, dtype=torch.long), self.inputs.device)
        parts = iter(torch.split(indices, [len(part) for step in plan for part in step.micro_batches]))
        for step in plan:
            micro_batches = [next(parts) for _ in step.micro_batches]
            yield StepBatches([(self.inputs[part], self.labels[part]) for part in micro_batches], step.weights)
