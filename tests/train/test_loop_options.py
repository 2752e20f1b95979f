"""Training-loop options on one in-process gloo rank: torch.compile, fp16's scaler, DDP options, channels_last."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch._dynamo  # noqa: F401  (sets TORCHINDUCTOR_CACHE_DIR on import: keep it out of the leak check)

from orchestrator.config.load import validate
from orchestrator.config.schema import (
    CheckpointConfig,
    CnnConfig,
    DdpConfig,
    GptConfig,
    JobConfig,
    MlpConfig,
    ScalingConfig,
    SyntheticConfig,
    TokensConfig,
    TrackingConfig,
    TrainerConfig,
)
from orchestrator.lifecycle.rank_reports import MetricsReport
from orchestrator.train.checkpoint import latest_checkpoint
from orchestrator.train.loop import TrainContext, build_trainer
from orchestrator.train.models import build_model
from orchestrator.train.sharded_checkpoint import read_trainer_state
from orchestrator.worker.ddp import process_group
from tests.train.ranks import rank_spec, train_here, use_master


def small_job(tmp_path: Path, ddp: DdpConfig = DdpConfig(), strategy: str = "ddp", **trainer) -> JobConfig:
    """A tiny MLP on synthetic vectors (ddp), or a tiny gpt on tokens (fsdp: TorchDynamo compiles no unit made of
    torch.nn's own layers alone), logging every step, recording nothing."""
    model, data = MlpConfig(hidden_sizes=[16]), SyntheticConfig(num_samples=256, input_shape=[8], batch_size=16)
    if strategy == "fsdp":
        model = GptConfig(layers=2, heads=2, width=32, context=16)
        data = TokensConfig(num_sequences=64, seq_len=16, vocab_size=64, batch_size=8)
    job = JobConfig(
        model=model,
        data=data,
        trainer=TrainerConfig(**{"max_steps": 3, "log_every_n_steps": 1, **trainer}),
        scaling=ScalingConfig(strategy=strategy),
        ddp=ddp,
        tracking=TrackingConfig(enabled=False),
        checkpoint=CheckpointConfig(dir=str(tmp_path)),
    )
    validate(job)
    return job


def train_losses(reports: list) -> list[float]:
    return [
        report.metrics["train/loss"]
        for report in reports
        if isinstance(report, MetricsReport) and "train/loss" in report.metrics
    ]


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_compile_gives_the_eager_losses_on_the_first_steps(strategy, tmp_path, monkeypatch):
    from torch._dynamo.utils import counters

    # inductor publishes an address for its compiled kernels in this variable; setting it through monkeypatch
    # first makes the test's teardown restore the environment as it was (delenv of an unset name records nothing)
    monkeypatch.setenv("_TORCHINDUCTOR_PYOBJECT_TENSOR_DATA_PTR", "")
    use_master(monkeypatch)
    eager, _ = train_here(small_job(tmp_path / "eager", strategy=strategy), tmp_path / "eager")
    graphs_before = counters["stats"]["unique_graphs"]
    use_master(monkeypatch)
    try:
        compiled, _ = train_here(
            small_job(tmp_path / "compiled", strategy=strategy, compile=True), tmp_path / "compiled"
        )
        assert counters["stats"]["unique_graphs"] > graphs_before, "trainer.compile=true compiled nothing"
    finally:
        torch._dynamo.reset()  # the compiled graphs hold the job's model: free them with the test
    assert len(train_losses(eager)) == 3
    assert train_losses(compiled) == pytest.approx(train_losses(eager), rel=1e-5)


def test_fp16_grad_scaler_state_is_checkpointed_and_restored(tmp_path, monkeypatch):
    use_master(monkeypatch)
    train_here(small_job(tmp_path, amp="fp16", max_steps=2), tmp_path)
    saved = read_trainer_state(latest_checkpoint(tmp_path))["scaler"]
    # two steps without an overflow: the tracker counts them towards the next growth of the scale
    assert saved["scale"] == 2.0**16 and saved["_growth_tracker"] == 2
    use_master(monkeypatch)
    spec, device = rank_spec(0, 1), torch.device("cpu")
    with process_group(spec, device, timeout_s=60):
        context = TrainContext(
            spec=spec,
            device=device,
            emit=lambda report: None,
            stop_requested=lambda: False,
            checkpoint_dir=tmp_path,
            resume_from=latest_checkpoint(tmp_path),
        )
        trainer = build_trainer(small_job(tmp_path, amp="fp16", max_steps=4), context)
        trainer.checkpointer.close()
    assert trainer.scaler.is_enabled() and trainer.scaler.state_dict() == saved


def test_ddp_options_reach_the_wrapper_and_train(tmp_path, monkeypatch):
    options = DdpConfig(bucket_cap_mb=0.5, gradient_as_bucket_view=True, static_graph=True)
    use_master(monkeypatch)
    spec, device = rank_spec(0, 1), torch.device("cpu")
    with process_group(spec, device, timeout_s=60):
        context = TrainContext(
            spec=spec, device=device, emit=lambda report: None, stop_requested=lambda: False, checkpoint_dir=tmp_path
        )
        trainer = build_trainer(small_job(tmp_path, ddp=options), context)
        try:
            result = trainer.fit()
        finally:
            trainer.checkpointer.close()
        ddp = trainer.parallel.model
        assert (ddp.bucket_bytes_cap, ddp.gradient_as_bucket_view, ddp.static_graph, ddp.find_unused_parameters) == (
            512 * 1024,
            True,
            True,
            False,
        )
        assert result.step == 3
        unused = build_trainer(small_job(tmp_path / "unused", ddp=DdpConfig(find_unused_parameters=True)), context)
        unused.checkpointer.close()
        assert unused.parallel.model.find_unused_parameters and not unused.parallel.model.static_graph


def test_channels_last_cnn_computes_what_the_default_layout_computes():
    torch.manual_seed(0)
    config = CnnConfig(channels=[4, 8], hidden=16)
    default = build_model(config, (3, 8, 8), 5)
    nhwc = build_model(dataclasses.replace(config, channels_last=True), (3, 8, 8), 5)
    nhwc.load_state_dict(default.state_dict())
    convs = [layer for layer in nhwc.modules() if isinstance(layer, torch.nn.Conv2d)]
    assert convs and all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)
    inputs = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(nhwc(inputs), default(inputs), rtol=1e-5, atol=1e-6)
