"""Optimizer and learning-rate schedule from the `optim` config."""

from __future__ import annotations

import math
from typing import Iterable

import torch

from orchestrator.config.schema import OptimConfig


def build_optimizer(optim: OptimConfig, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW at the configured peak learning rate."""
    if optim.name == "sgd":
        return torch.optim.SGD(parameters, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay)
    if optim.name == "adamw":
        return torch.optim.AdamW(parameters, lr=optim.lr, weight_decay=optim.weight_decay)
    raise ValueError(f"optim.name={optim.name} is not valid: use one of sgd, adamw")


def lr_factor(optim: OptimConfig, step: int, total_steps: int) -> float:
    """Multiplier of the peak lr before optimizer step `step` (0-based): linear warm-up, then the schedule."""
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - optim.warmup_steps)
    progress = min(1.0, (step - optim.warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optim: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepping once per optimizer step over `total_steps`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(optim, step, total_steps))
