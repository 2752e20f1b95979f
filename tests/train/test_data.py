"""Data sets and sharding: the same global batches whatever the world size."""

from __future__ import annotations

import pytest
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
        steps.append(sorted(int(y) for rank_step in step for _, ys in rank_step.micro_batches for y in ys))
    return steps


def test_two_ranks_of_batch_b_see_what_one_rank_of_batch_2b_sees():
    assert _global_batches(2, 8, epoch=1)[:5] == _global_batches(1, 16, epoch=1)[:5]
    assert _global_batches(4, 4, epoch=0)[:5] == _global_batches(1, 16, epoch=0)[:5]


def test_accumulation_groups_micro_batches_and_resuming_skips_whole_steps():
    inputs, labels = torch.zeros(40, 1), torch.arange(40)
    shard = ShardedBatches(inputs, labels, world_size=1, world_rank=0, batch_size=4, accum_steps=3, seed=0)
    steps = list(shard.epoch(0))
    assert shard.steps_per_epoch == 4 == len(steps)
    assert [len(step.micro_batches) for step in steps] == [3, 3, 3, 1]
    resumed = list(shard.epoch(0, start=2 * shard.global_step_samples))
    assert [[ys.tolist() for _, ys in step.micro_batches] for step in resumed] == [
        [ys.tolist() for _, ys in step.micro_batches] for step in steps[2:]
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


def _today(share, epoch: int, start: int) -> list[list[list[int]]]:
    """The micro-batches per step a share of G = W x B x A took before elastic batches: its epoch_indices
    in steps of B x A samples, each split into micro-batches of B."""
    indices, size = share.epoch_indices(epoch, start), share.batch_size
    per_step = size * share.accum_steps
    steps = [indices[first : first + per_step] for first in range(0, len(indices), per_step)]
    return [[step[first : first + size] for first in range(0, len(step), size)] for step in steps]


def test_a_global_batch_of_w_times_b_takes_the_samplers_batches_as_before():
    from orchestrator.train.data import RankShare

    for num_items, world_size, batch_size, accum_steps, start in [
        (103, 3, 4, 2, 0),
        (100, 2, 5, 1, 30),
        (7, 4, 3, 2, 1),
    ]:
        for rank in range(world_size):
            share = RankShare(num_items, world_size, rank, batch_size, accum_steps, seed=2)
            explicit = RankShare(
                num_items, world_size, rank, batch_size, accum_steps, 2, world_size * batch_size * accum_steps
            )
            for plan in (share.epoch_plan(1, start), explicit.epoch_plan(1, start)):
                assert [step.micro_batches for step in plan] == _today(share, 1, start)
                assert all(step.weights is None for step in plan)
            # the counts before elastic batches, in this world's steps
            per_rank = -(-max(num_items - start, 0) // world_size)
            assert explicit.steps_from(start) == -(-(-(-per_rank // batch_size)) // accum_steps)
            for steps in range(explicit.steps_from(start) + 2):
                before = start + world_size * min(steps * batch_size * accum_steps, per_rank)
                assert explicit.position_after(start, steps) == before


def test_sharded_batches_of_a_global_batch_of_w_times_b_are_the_same_tensors():
    inputs, labels = torch.randn(50, 3), torch.arange(50)
    default = ShardedBatches(inputs, labels, 2, 1, 4, 3, seed=0)
    explicit = ShardedBatches(inputs, labels, 2, 1, 4, 3, seed=0, global_batch=24)
    for one, other in zip(default.epoch(0, start=12), explicit.epoch(0, start=12), strict=True):
        assert one.weights is other.weights is None
        for (x, y), (x_again, y_again) in zip(one.micro_batches, other.micro_batches, strict=True):
            assert torch.equal(x, x_again) and torch.equal(y, y_again)


def _world(num_items: int, world_size: int, batch_size: int, global_batch: int):
    from orchestrator.train.data import RankShare

    return [RankShare(num_items, world_size, rank, batch_size, 1, 4, global_batch) for rank in range(world_size)]


def _check_step(shares, steps, order: list[int], position: int) -> list[int]:
    """One global step of every rank against the epoch's order; returns the samples it took (stand-ins left out)."""
    world_size, global_batch = len(shares), shares[0].global_batch
    assert len({len(step.micro_batches) for step in steps}) == 1, "every rank runs as many micro-batches"
    taken: list[int] = []
    weight_sum = 0.0
    for step in steps:
        for index, part in enumerate(step.micro_batches):
            assert 0 < len(part) <= shares[0].batch_size
            weight_sum += 1 / len(step.micro_batches) if step.weights is None else step.weights[index]
            taken += part if step.counts(index) else []
    assert weight_sum == pytest.approx(world_size), "DDP's mean over W ranks makes it the mean over the samples"
    assert sorted(taken) == sorted(order[position : position + global_batch])
    return taken


@pytest.mark.parametrize("batch_size", [1, 3, 4])
def test_a_kept_global_batch_takes_the_same_slices_on_3_then_2_then_3_ranks(batch_size):
    num_items, global_batch = 90 * batch_size, 3 * batch_size  # 3 ranks' batch: an epoch of 90 whole steps
    order = _world(num_items, 1, batch_size, global_batch)[0].epoch_indices(0)
    position, seen = 0, []
    for world_size, steps in [(3, 7), (2, 50), (3, 100)]:
        shares = _world(num_items, world_size, batch_size, global_batch)
        plans = [share.epoch_plan(0, position) for share in shares]
        assert {len(plan) for plan in plans} == {shares[0].steps_from(position)}
        for step in range(min(steps, len(plans[0]))):
            taken = _check_step(shares, [plan[step] for plan in plans], order, position)
            assert len(taken) == global_batch
            seen += taken
            position = shares[0].position_after(position, 1)
        assert position == min(num_items, len(seen))
    assert sorted(seen) == list(range(num_items)), "every sample of the epoch exactly once"


def test_steps_and_positions_agree_with_the_plan_when_the_epoch_does_not_divide():
    for num_items, world_size, batch_size, global_batch in [
        (95, 2, 4, 12),
        (91, 2, 3, 9),
        (20, 3, 2, 9),
        (11, 2, 1, 3),
    ]:
        order = _world(num_items, 1, batch_size, global_batch)[0].epoch_indices(2)
        shares = _world(num_items, world_size, batch_size, global_batch)
        assert shares[0].steps_per_epoch == -(-num_items // global_batch)
        for start in (0, global_batch, num_items - 1, num_items):
            plans = [share.epoch_plan(2, start) for share in shares]
            steps = shares[0].steps_from(start)
            assert {len(plan) for plan in plans} == {steps}
            seen = []
            for step in range(steps):
                position = shares[0].position_after(start, step)
                assert position == start + step * global_batch
                # resuming at that position continues with the very same steps
                assert [share.epoch_plan(2, position) for share in shares] == [plan[step:] for plan in plans]
                seen += _check_step(shares, [plan[step] for plan in plans], order, position)
            # no padding: the short last step holds exactly the rest of the epoch (smaller shares run stand-ins)
            assert sorted(seen) == sorted(order[start:])
            end = shares[0].position_after(start, steps)
            assert end == max(num_items, start) and shares[0].steps_from(end) == 0


def test_a_data_loader_yields_the_samples_of_the_in_memory_plan():
    from orchestrator.train.loader import LoaderBatches

    inputs, labels = torch.randn(45, 2), torch.arange(45)
    items = list(zip(inputs, labels))
    for global_batch in (None, 9):
        for num_workers in (0, 1):
            loader = LoaderBatches(items, 2, 1, 3, 1, 0, num_workers, torch.device("cpu"), global_batch)
            memory = ShardedBatches(inputs, labels, 2, 1, 3, 1, 0, global_batch)
            try:
                for epoch, start in [(0, 18), (1, 0)]:  # persistent workers serve a second epoch
                    for loaded, held in zip(loader.epoch(epoch, start), memory.epoch(epoch, start), strict=True):
                        assert loaded.weights == held.weights
                        for (x, y), (x_held, y_held) in zip(loaded.micro_batches, held.micro_batches, strict=True):
                            assert torch.equal(x, x_held) and torch.equal(y, y_held)
            finally:
                loader.close()


def test_a_kept_global_batch_keeps_the_schedules_length_on_any_world_size():
    from orchestrator.config.schema import JobConfig, ScalingConfig, SyntheticConfig, TrainerConfig
    from orchestrator.train.data import RankShare
    from orchestrator.train.loop import global_batch, total_steps

    def job(elastic_batch: str, min_workers=2) -> JobConfig:
        scaling = ScalingConfig(num_workers=3, min_workers=min_workers, elastic_batch=elastic_batch)
        return JobConfig(data=SyntheticConfig(batch_size=2), trainer=TrainerConfig(grad_accum_steps=3), scaling=scaling)

    assert [global_batch(job("keep_global"), world_size) for world_size in (1, 2, 3)] == [18, 18, 18]
    assert [global_batch(job("keep_per_worker"), world_size) for world_size in (1, 2, 3)] == [6, 12, 18]
    # a fixed-size job (resumed by hand on another world size) keeps each rank's batch, as it always did
    assert global_batch(job("keep_global", min_workers=None), 2) == 12
    trainer = TrainerConfig(max_epochs=3)
    whole = total_steps(trainer, RankShare(180, 3, 0, 2, 3, 0, 18))
    resumed = {"step": 4, "epoch": 0, "samples_in_epoch": 4 * 18}
    assert whole == 30 == total_steps(trainer, RankShare(180, 2, 0, 2, 3, 0, 18), resumed)
    assert total_steps(trainer, RankShare(180, 2, 0, 2, 3, 0, 12), resumed) == 4 + 9 + 2 * 15
