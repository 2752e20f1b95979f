"""In-memory data sets and each rank's share of them, batch by batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

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


class RankShare:
    """This rank's share of a data set of `num_items`, counted in micro-batches and optimizer steps (the same
    counts on every rank), from any global position in an epoch.

    An epoch's order is DistributedSampler's (seed + epoch, shuffled, padded with its own start to a multiple
    of the world size, dealt round robin), so from position 0 the indices are exactly the sampler's. Global
    step i of world size W covers the order's samples [i*W*B, (i+1)*W*B) (B = batch_size x accum_steps), so a
    position in samples means the same under any world size: a checkpoint of W ranks continues on W' ranks
    with every sample of the epoch seen once.
    """

    def __init__(self, num_items: int, world_size: int, world_rank: int, batch_size: int, accum_steps: int, seed: int):
        self.num_items = num_items
        self.world_size = world_size
        self.world_rank = world_rank
        self.batch_size = batch_size
        self.accum_steps = accum_steps
        self.seed = seed

    @property
    def global_step_samples(self) -> int:
        """Samples one optimizer step takes from the epoch's order, over all ranks."""
        return self.world_size * self.batch_size * self.accum_steps

    def epoch_indices(self, epoch: int, start: int = 0) -> list[int]:
        """This rank's indices of epoch `epoch` from global position `start` (samples already taken)."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_items, generator=generator).tolist()
        rest = order[start:]
        padding = -len(rest) % self.world_size
        rest += (order * -(-padding // max(len(order), 1)))[:padding]
        return rest[self.world_rank :: self.world_size]

    def steps_from(self, start: int) -> int:
        """Optimizer steps left in an epoch at global position `start` (the last may be short)."""
        per_rank = -(-max(self.num_items - start, 0) // self.world_size)
        micro_batches = -(-per_rank // self.batch_size)
        return -(-micro_batches // self.accum_steps)

    @property
    def micro_batches_per_epoch(self) -> int:
        """Micro-batches this rank runs per epoch (the same on every rank)."""
        per_rank = -(-self.num_items // self.world_size)
        return -(-per_rank // self.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per whole epoch (the last may accumulate fewer micro-batches)."""
        return self.steps_from(0)

    def position_after(self, start: int, steps: int) -> int:
        """The global position after `steps` optimizer steps from `start` (past the data's end once the epoch
        is done: padding counts)."""
        per_rank = -(-max(self.num_items - start, 0) // self.world_size)
        return start + self.world_size * min(steps * self.batch_size * self.accum_steps, per_rank)


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
    ):
        # inputs and labels live where the model runs (the whole set is moved once, see loop._on_device):
        # each micro-batch is then one gather on the device, with no per-step host-to-device copy
        super().__init__(len(labels), world_size, world_rank, batch_size, accum_steps, seed)
        self.inputs = inputs
        self.labels = labels

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Yield one list of (inputs, labels) micro-batches per optimizer step, from global position `start`."""
        # the epoch's order goes to the device once: indexing a GPU tensor with CPU indices would copy them
        # (from pageable memory, synchronously) on every micro-batch
        indices = to_device(torch.tensor(self.epoch_indices(epoch, start), dtype=torch.long), self.inputs.device)
        step_samples = self.batch_size * self.accum_steps
        for start in range(0, len(indices), step_samples):
            chunk = indices[start : start + step_samples]
            yield [(self.inputs[part], self.labels[part]) for part in torch.split(chunk, self.batch_size)]
