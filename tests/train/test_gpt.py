"""The gpt model: its FLOPs formula against a hand count and torch's FLOP counter, and that it learns."""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo  # noqa: F401  (sets TORCHINDUCTOR_CACHE_DIR on import: keep it out of the leak check)
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from orchestrator.config.load import validate
from orchestrator.config.schema import (
    CheckpointConfig,
    GptConfig,
    JobConfig,
    OptimConfig,
    TokensConfig,
    TrackingConfig,
    TrainerConfig,
)
from orchestrator.lifecycle.rank_reports import MetricsReport
from orchestrator.train.flops import matmul_params, training_flops_per_token
from orchestrator.train.gpt import Gpt
from tests.train.ranks import train_here, use_master

SMALL = GptConfig(layers=2, heads=2, width=32, context=16)


def test_flops_per_token_is_the_hand_count():
    # per layer: qkv 32x96 + output 32x32 + MLP 32x128 + 128x32 = 12 * 32^2 = 12,288 weights; two layers
    # 24,576, plus the 64 x 32 output head 2,048: N = 26,624. Training: 6N = 159,744 FLOPs per token, and
    # attention 2 layers x (QK^T + AV: 2 x 2 x 16 x 32 forward, 3x with backward) = 12 x 2 x 16 x 32 = 12,288.
    assert matmul_params(SMALL, vocab_size=64) == 26_624
    assert training_flops_per_token(SMALL, vocab_size=64, seq_len=16) == 159_744 + 12_288


def test_flops_per_token_is_what_torch_counts_in_a_training_step():
    model, tokens = Gpt(SMALL, vocab_size=64), torch.randint(0, 64, (3, 16))
    # the math backend runs attention as batched matmuls, which the counter sees (fused kernels it does not)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens).sum().backward()
    assert counter.get_total_flops() == tokens.numel() * training_flops_per_token(SMALL, 64, 16)


def test_gpt_learns_the_token_chain_and_reports_tokens_and_mfu(tmp_path, monkeypatch):
    job = JobConfig(
        model=SMALL,
        data=TokensConfig(num_sequences=512, seq_len=16, vocab_size=32, batch_size=32),
        trainer=TrainerConfig(max_steps=40, log_every_n_steps=10, peak_tflops=1.0),
        optim=OptimConfig(lr=0.01),
        tracking=TrackingConfig(enabled=False),
        checkpoint=CheckpointConfig(dir=str(tmp_path)),
    )
    validate(job)
    use_master(monkeypatch)
    reports, result = train_here(job, tmp_path)
    logged = [
        report.metrics for report in reports if isinstance(report, MetricsReport) and "train/loss" in report.metrics
    ]
    losses = [metrics["train/loss"] for metrics in logged]
    # guessing costs log(32) = 3.47 nats per token; the chain (4 successors per token) allows under log(4) = 1.39
    assert losses[0] > 2.5 and losses[-1] < 1.8, losses
    assert result.metrics["eval/accuracy"] > 0.35  # a guess is right 1 time in 32
    last = logged[-1]
    assert last["train/tokens_per_s"] == pytest.approx(last["train/samples_per_s"] * 16)
    flops_per_s = last["train/tokens_per_s"] * training_flops_per_token(SMALL, 32, 16)
    assert last["train/model_tflops"] == pytest.approx(flops_per_s / 1e12)
    assert last["train/mfu"] == pytest.approx(last["train/model_tflops"] / 1.0)
    assert math.isfinite(result.metrics["eval/loss"])
