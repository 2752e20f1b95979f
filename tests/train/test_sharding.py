"""FSDP and sharded checkpoints on gloo ranks in child processes (no Ray): FSDP trains as DDP does, and a
checkpoint written by 2 ranks continues on 1 and on 3 from the same step with the saved parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestrator.config.load import validate
from orchestrator.config.schema import (
    CheckpointConfig,
    FsdpConfig,
    GptConfig,
    JobConfig,
    ScalingConfig,
    TokensConfig,
    TrackingConfig,
    TrainerConfig,
)
from orchestrator.lifecycle.rank_reports import CheckpointReport, MetricsReport, StepReport
from orchestrator.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from tests.helpers import free_ports
from tests.train.ranks import run_ranks

pytestmark = pytest.mark.slow  # ranks in child processes: about 80 s

STEPS = 8


def _job(strategy: str, checkpoint_dir: Path, async_save: bool = True, accum_steps: int = 1) -> JobConfig:
    job = JobConfig(
        model=GptConfig(layers=2, heads=2, width=32, context=16),
        data=TokensConfig(num_sequences=96, seq_len=16, vocab_size=64, batch_size=4 // accum_steps),
        trainer=TrainerConfig(max_steps=STEPS, log_every_n_steps=1, grad_accum_steps=accum_steps),
        scaling=ScalingConfig(strategy=strategy),
        fsdp=FsdpConfig(),
        tracking=TrackingConfig(enabled=False),
        checkpoint=CheckpointConfig(dir=str(checkpoint_dir), every_n_steps=4, keep_last=3, async_save=async_save),
    )
    validate(job)
    return job


def _phase(world_rank: int, name: str, world_size_text: str, ports_text: str, out_text: str) -> None:
    """One rank of one phase in a child process; what it saw goes to out/<name>.rank<r>.pt."""
    from tests.train.ranks import set_master_in_child, train_here

    world_size, ports, out = int(world_size_text), [int(port) for port in ports_text.split(",")], Path(out_text)
    set_master_in_child(ports[0])
    if name in ("ddp", "fsdp", "fsdp-sync", "fsdp-accum"):
        job = _job(
            name.split("-")[0], out / name, async_save=name != "fsdp-sync", accum_steps=2 if "accum" in name else 1
        )
        reports, result = train_here(job, out / name, world_rank, world_size)
        loaded = None
    else:  # resume the 2-rank FSDP run's step-4 checkpoint on this world size
        job = _job("fsdp", out / name)
        source = out / "fsdp" / "step_000000004"
        loaded = _weights_after_load(job, out / name, source, world_rank, world_size)
        set_master_in_child(ports[1])
        reports, result = train_here(job, out / name, world_rank, world_size, resume_from=source)
    torch.save(
        {
            "losses": {
                r.step: r.metrics["train/loss"]
                for r in reports
                if isinstance(r, MetricsReport) and "train/loss" in r.metrics
            },
            "memory": [
                r.metrics for r in reports if isinstance(r, MetricsReport) and "memory/max_peak_mib" in r.metrics
            ],
            "blocked": [
                r.metrics["checkpoint/blocked_s"]
                for r in reports
                if isinstance(r, MetricsReport) and "checkpoint/blocked_s" in r.metrics
            ],
            "checkpoints": [r.step for r in reports if isinstance(r, CheckpointReport)],
            "steps": [r.step for r in reports if isinstance(r, StepReport)],
            "digest": result.params_digest,
            "weights": result.model_state,
            "loaded": loaded,
        },
        out / f"{name}.rank{world_rank}.pt",
    )


def _weights_after_load(job: JobConfig, folder: Path, source: Path, world_rank: int, world_size: int) -> dict:
    """The whole model as this world holds it right after loading `source` (rank 0's; {} elsewhere)."""
    from orchestrator.train.loop import TrainContext, build_trainer
    from orchestrator.worker.ddp import process_group
    from tests.train.ranks import rank_spec

    spec, device = rank_spec(world_rank, world_size), torch.device("cpu")
    with process_group(spec, device, timeout_s=120):
        context = TrainContext(spec, device, lambda report: None, lambda: False, folder, resume_from=source)
        trainer = build_trainer(job, context)
        try:
            return {
                "step": trainer.step,
                "position": trainer.samples_in_epoch,
                "model": trainer.parallel.full_weights(),
            }
        finally:
            trainer.checkpointer.close()


def _run(name: str, world_size: int, out: Path) -> list[dict]:
    ports = ",".join(map(str, free_ports(2)))
    codes = run_ranks("tests.train.test_sharding:_phase", world_size, [name, str(world_size), ports, str(out)], 240)
    assert codes == [0] * world_size, f"phase {name}: exit codes {codes}"
    return [torch.load(out / f"{name}.rank{rank}.pt", weights_only=False) for rank in range(world_size)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding")
    return out, {name: _run(name, 2, out) for name in ("ddp", "fsdp", "fsdp-sync", "fsdp-accum")}


def test_fsdp_reaches_the_losses_of_ddp_and_shards_the_model_state(two_ranks):
    _, runs = two_ranks
    ddp, fsdp = runs["ddp"][0], runs["fsdp"][0]
    assert sorted(fsdp["losses"]) == list(range(1, STEPS + 1))
    # the same data, init and updates; only the reduction order of the gradients differs
    for step, loss in ddp["losses"].items():
        assert fsdp["losses"][step] == pytest.approx(loss, rel=1e-4), f"step {step}"
    for name, weight in ddp["weights"].items():
        torch.testing.assert_close(fsdp["weights"][name], weight, rtol=1e-4, atol=1e-5)
    assert runs["fsdp"][1]["weights"] is None and runs["fsdp"][0]["digest"] == runs["fsdp"][1]["digest"]
    # per-rank memory reaches the metrics: FSDP holds about half of DDP's parameters and optimizer state
    last_ddp, last_fsdp = ddp["memory"][-1], fsdp["memory"][-1]
    assert {f"memory/rank{r}/{what}" for r in (0, 1) for what in ("peak_mib", "model_state_mib")} <= set(last_fsdp)
    ratio = last_fsdp["memory/max_model_state_mib"] / last_ddp["memory/max_model_state_mib"]
    assert 0.45 < ratio < 0.6, ratio
    assert last_fsdp["memory/rank0/peak_mib"] > 0


def test_every_rank_writes_its_shards_and_only_complete_checkpoints_are_kept(two_ranks):
    out, runs = two_ranks
    for name in ("ddp", "fsdp", "fsdp-sync", "fsdp-accum"):
        folder = out / name
        assert [path.name for path in list_checkpoints(folder)] == ["step_000000004", "step_000000008"]
        assert not list(folder.glob(".step_*"))
        shards = sorted(path.name for path in (folder / "step_000000008").glob("*.distcp"))
        assert shards == ["__0_0.distcp", "__1_0.distcp"], f"{name}: both ranks write a part ({shards})"
        assert runs[name][0]["checkpoints"] == [4, 8] and runs[name][0]["blocked"]
    # asynchronous and synchronous saves write the same checkpoint
    asynchronous = load_checkpoint(out / "fsdp" / "step_000000008")
    synchronous = load_checkpoint(out / "fsdp-sync" / "step_000000008")
    for name, weight in synchronous["model"].items():
        assert torch.equal(asynchronous["model"][name], weight)
    assert asynchronous["step"] == 8 and asynchronous["world_size"] == 2


def test_fsdp_accumulating_two_micro_batches_equals_one_batch_of_twice_the_size(two_ranks):
    _, runs = two_ranks
    accumulated, whole = runs["fsdp-accum"][0], runs["fsdp"][0]
    assert sorted(accumulated["losses"]) == list(range(1, STEPS + 1))
    assert list(accumulated["losses"].values()) == pytest.approx(list(whole["losses"].values()), rel=1e-5)
    for name, weight in whole["weights"].items():
        # two micro-batch means averaged, against one mean: the same sums in another order
        torch.testing.assert_close(accumulated["weights"][name], weight, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("world_size", [1, 3])
def test_a_checkpoint_of_two_ranks_continues_on_another_world_size(two_ranks, world_size):
    out, _ = two_ranks
    saved = load_checkpoint(out / "fsdp" / "step_000000004")
    name = f"resume-on-{world_size}"
    ranks = _run(name, world_size, out)
    loaded = ranks[0]["loaded"]
    assert loaded["step"] == 4 and loaded["position"] == saved["samples_in_epoch"] == 4 * 2 * 4
    for key, weight in saved["model"].items():
        assert torch.equal(loaded["model"][key], weight), key
    assert min(ranks[0]["steps"]) == 5 and max(ranks[0]["steps"]) == STEPS
    assert sorted(ranks[0]["losses"]) == list(range(5, STEPS + 1))
    newest = latest_checkpoint(out / name)
    assert newest is not None and newest.name == "step_000000008"
    assert load_checkpoint(newest)["world_size"] == world_size
