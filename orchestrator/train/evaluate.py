"""Exact evaluation over the test split, sharded across ranks without padding."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from orchestrator.train.precision import autocast


def token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over every prediction: one per sample (classes), or one per token (gpt: batch x length)."""
    return nn.functional.cross_entropy(logits.flatten(0, -2), labels.flatten(), reduction=reduction)


@torch.no_grad()
def evaluate(
    module: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    world_rank: int,
    world_size: int,
    batch_size: int,
    amp: str,
    lockstep: bool = False,
) -> dict[str, float]:
    """Loss and accuracy over every test sample exactly once (rank r takes samples r, r+W, ...); per token for gpt.

    DistributedSampler would pad the split with repeated samples to even out the shards, which makes
    the reported accuracy slightly wrong; summing exact counts over ranks keeps it true. With `lockstep`
    (FSDP, whose forwards are collectives) a rank with fewer batches runs uncounted forwards to match.
    """
    was_training = module.training
    module.eval()
    device = inputs.device
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    shard = torch.arange(world_rank, len(labels), world_size, device=device)
    parts = torch.split(shard, batch_size)
    for _ in range(lockstep_padding(len(parts), len(labels), world_size, batch_size) if lockstep else 0):
        with autocast(device, amp):
            module(inputs[:1])
    for part in parts:
        with autocast(device, amp):
            logits = module(inputs[part])
        target = labels[part]
        totals[0] += token_loss(logits.float(), target, reduction="sum").double()
        totals[1] += (logits.argmax(dim=-1) == target).sum()
        totals[2] += target.numel()
    if world_size > 1:
        dist.all_reduce(totals)
    module.train(was_training)
    loss_sum, correct, count = totals.tolist()
    return {"eval/loss": loss_sum / count, "eval/accuracy": correct / count}


def lockstep_padding(batches: int, num_items: int, world_size: int, batch_size: int) -> int:
    """Forwards a rank with `batches` evaluation batches adds to run as many as the rank with the most."""
    largest_shard = -(-num_items // world_size)  # ceil: rank 0 takes samples 0, W, 2W, ...
    return -(-largest_shard // batch_size) - batches
