"""The built-in loop on a CUDA GPU as one NCCL rank (`pytest -m gpu` on a GPU machine; deselected elsewhere)."""

from __future__ import annotations

import time

import pytest
import torch
import torch._dynamo  # noqa: F401  (sets TORCHINDUCTOR_CACHE_DIR on import: keep it out of the leak check)

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
from orchestrator.train.checkpoint import latest_checkpoint, load_checkpoint
from tests.train.ranks import train_here, use_master

pytestmark = pytest.mark.gpu

LOG_EVERY = 10


def gpt_job(tmp_path, model: GptConfig, steps: int, batch: int, vocab: int = 64, **trainer) -> JobConfig:
    job = JobConfig(
        model=model,
        data=TokensConfig(
            num_sequences=int((steps + 1) * batch / 0.9) + 1,
            seq_len=model.context,
            vocab_size=vocab,
            batch_size=batch,
            test_fraction=0.1,
        ),
        trainer=TrainerConfig(**{"max_steps": steps, "log_every_n_steps": LOG_EVERY, **trainer}),
        optim=OptimConfig(lr=3e-3 if vocab <= 64 else 3e-4, schedule="constant"),
        tracking=TrackingConfig(enabled=False),
        checkpoint=CheckpointConfig(dir=str(tmp_path)),
    )
    validate(job)
    return job


@pytest.fixture
def gpu():
    if not torch.cuda.is_available():
        pytest.fail("`-m gpu` was asked for, but torch sees no CUDA GPU here")
    return torch.device("cuda", 0)


def test_the_reported_rate_is_what_a_clock_outside_the_loop_sees(tmp_path, monkeypatch, gpu):
    # fp32 without compile: the host queues kernels faster than the GPU runs them, so a window timed
    # before its results are read back would leave the queued steps' time out and overstate the rate
    job = gpt_job(tmp_path, GptConfig(layers=8, heads=16, width=1024, context=512), steps=80, batch=8, vocab=8192)
    arrivals: list[tuple[int, float]] = []

    def note_arrival(report) -> None:
        if isinstance(report, MetricsReport) and "train/tokens_per_s" in report.metrics:
            arrivals.append((report.step, time.perf_counter()))

    use_master(monkeypatch)
    reports, _ = train_here(job, tmp_path, device=gpu, emit=note_arrival)
    reported = {
        report.step: report.metrics["train/tokens_per_s"]
        for report in reports
        if isinstance(report, MetricsReport) and "train/tokens_per_s" in report.metrics
    }
    tokens = LOG_EVERY * job.data.batch_size * job.model.context
    outside = {
        step: tokens / (seconds - previous)
        for (_, previous), (step, seconds) in zip(arrivals, arrivals[1:])
        if step > 2 * LOG_EVERY
    }
    print(
        "\nstep: reported / timed outside = "
        + ", ".join(f"{step}: {reported[step]:,.0f} / {rate:,.0f}" for step, rate in outside.items())
    )
    for step, rate in outside.items():
        assert reported[step] == pytest.approx(rate, rel=0.03), step


def test_bf16_with_compile_learns_and_checkpoints_the_plain_model(tmp_path, monkeypatch, gpu):
    model = GptConfig(layers=2, heads=4, width=128, context=64)
    job = gpt_job(tmp_path, model, steps=60, batch=32, amp="bf16", compile=True, tf32=True, peak_tflops=1000.0)
    use_master(monkeypatch)
    reports, result = train_here(job, tmp_path, device=gpu)
    logged = [
        report.metrics for report in reports if isinstance(report, MetricsReport) and "train/loss" in report.metrics
    ]
    # guessing costs log(64) = 4.16 nats per token; the chain (4 successors per token) allows under log(4) = 1.39
    assert logged[0]["train/loss"] > 3.0 and logged[-1]["train/loss"] < 1.8, [m["train/loss"] for m in logged]
    assert 0 < logged[-1]["train/mfu"] < 1
    state = load_checkpoint(latest_checkpoint(tmp_path))["model"]
    assert not any(key.startswith(("_orig_mod.", "module.")) for key in state), list(state)[:3]
    assert all(tensor.dtype == torch.float32 for tensor in state.values())  # autocast leaves the weights in fp32
    assert result.metrics["eval/accuracy"] > 0.2  # a guess is right 1 time in 64


def test_fp16_scales_the_loss_and_keeps_the_scaler_in_checkpoints(tmp_path, monkeypatch, gpu):
    job = gpt_job(tmp_path, GptConfig(layers=2, heads=4, width=128, context=64), steps=40, batch=32, amp="fp16")
    use_master(monkeypatch)
    reports, _ = train_here(job, tmp_path, device=gpu)
    losses = [
        report.metrics["train/loss"]
        for report in reports
        if isinstance(report, MetricsReport) and "train/loss" in report.metrics
    ]
    assert losses[-1] < losses[0] - 1.0, losses
    scaler = load_checkpoint(latest_checkpoint(tmp_path))["scaler"]
    # an enabled scaler's state: a power-of-two scale (halved on each overflow), growth tracked since the last one
    assert scaler["scale"] > 1 and float(scaler["scale"]).is_integer() and scaler["_growth_tracker"] <= 40
