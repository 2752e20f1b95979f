"""Data sets and sharding: the same global batches whatever the world size."""

from __future__ import annotations

import torch

from orchestrator.config.schema import DigitsConfig, SyntheticConfig
from orchestrator.train.data import ShardedBatches, load_dataset


def test_digits_split_is_fixed_by_the_seed_and_scaled_to_unit_range():
    first, again = load_dataset(DigitsConfig(), seed=3), load_dataset(DigitsConfig(), seed=3)
    other = load_dataset(DigitsConfig(), seed=4)
    assert first.train_x.shape == (1438, 1, 8, 8) and first.test_x.shape == (359, 1, 8, 8)
    assert torch.equal(first.test_y, again.test_y) and not torch.equal(first.test_y, other.test_y)
    assert first.train_x.min() >= 0 and first.train_x.max() <= 1 and first.num_classes == 10


def test_synthetic_labels_come_from_a_fixed_teacher():
    data = load_dataset(SyntheticConfig(num_samples=500, input_shape=[16], num_classes=4), seed=0)
    assert data.input_shape == (16,) and data.num_classes == 4
    assert set(data.train_y.tolist()) <= {0, 1, 2, 3} and len(set(data.train_y.tolist())) > 1


def _global_batches(world_size: int, batch_size: int, epoch: int, accum: int = 1):
    inputs = torch.arange(100.0).unsqueeze(1)
    labels = torch.arange(100)
    shards = [
        ShardedBatches(inputs, labels, world_size, rank, batch_size, accum, seed=11) for rank in range(world_size)
    ]
    per_rank = [list(shard.epoch(epoch)) for shard in shards]
    steps = []
    for step in zip(*per_rank):
        steps.append(sorted(int(y) for rank_groups in step for _, ys in rank_groups for y in ys))
    return steps


def test_two_ranks_of_batch_b_see_what_one_rank_of_batch_2b_sees():
    assert _global_batches(2, 8, epoch=1)[:5] == _global_batches(1, 16, epoch=1)[:5]
    assert _global_batches(4, 4, epoch=0)[:5] == _global_batches(1, 16, epoch=0)[:5]


def test_accumulation_groups_micro_batches_and_resuming_skips_whole_steps():
    inputs, labels = torch.zeros(40, 1), torch.arange(40)
    shard = ShardedBatches(inputs, labels, world_size=1, world_rank=0, batch_size=4, accum_steps=3, seed=0)
    steps = list(shard.epoch(0))
    assert shard.steps_per_epoch == 4 == len(steps)
    assert [len(group) for group in steps] == [3, 3, 3, 1]
    resumed = list(shard.epoch(0, start=2 * shard.global_step_samples))
    assert [[ys.tolist() for _, ys in group] for group in resumed] == [
        [ys.tolist() for _, ys in group] for group in steps[2:]
    ]


def test_from_position_zero_the_order_is_distributed_samplers():
    from torch.utils.data import DistributedSampler

    from orchestrator.train.data import RankShare

    for world_size in (1, 2, 3, 7):
        for rank in range(world_size):
            sampler = DistributedSampler(range(101), num_replicas=world_size, rank=rank, shuffle=True, seed=5)  # type: ignore[arg-type]
            sampler.set_epoch(2)
            share = RankShare(101, world_size, rank, batch_size=4, accum_steps=1, seed=5)
            assert share.epoch_indices(2) == list(sampler)


def test_a_global_position_continues_on_any_world_size_with_every_sample_once():
    from orchestrator.train.data import RankShare

    num_items, batch_size = 103, 4
    for saved_world, resumed_world in [(2, 1), (2, 3), (3, 2), (4, 4)]:
        before = [RankShare(num_items, saved_world, r, batch_size, 1, seed=9) for r in range(saved_world)]
        steps_taken = 5
        position = before[0].position_after(0, steps_taken)
        seen = [i for share in before for i in share.epoch_indices(0)[: steps_taken * batch_size]]
        after = [RankShare(num_items, resumed_world, r, batch_size, 1, seed=9) for r in range(resumed_world)]
        rest = [i for share in after for i in share.epoch_indices(0, start=position)]
        # the rest of the epoch has every sample not yet seen exactly once, plus only the padding that evens
        # out the ranks (samples repeated from the epoch's start, as DistributedSampler pads)
        assert sorted(set(seen)) == sorted(seen) and not set(seen) & set(rest[: num_items - position])
        unseen = set(range(num_items)) - set(seen)
        assert set(rest) >= unseen and len(rest) - len(unseen) < resumed_world
        assert len(rest) == len(unseen) + (-len(unseen) % resumed_world)
        steps_left = after[0].steps_from(position)
        assert steps_left == -(-(len(rest) // resumed_world) // batch_size)
        assert after[0].position_after(position, steps_left) >= num_items
