"""Gradient accumulation under DDP with 2 gloo ranks (child processes): k micro-batches of b = one batch of k*b.

The micro-steps before the last run under DDP's no_sync(), so gradients are all-reduced once per
optimizer step, not once per micro-batch: each rank counts the buckets DDP hands to the all-reduce.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestrator.config.load import validate
from orchestrator.config.schema import (
    CheckpointConfig,
    JobConfig,
    MlpConfig,
    SyntheticConfig,
    TrackingConfig,
    TrainerConfig,
)
from orchestrator.lifecycle.rank_reports import MetricsReport
from tests.helpers import free_ports
from tests.train.ranks import run_ranks, set_master_in_child, train_here

STEPS = 4
SETUPS = {"accumulated": (4, 4), "one batch": (1, 16)}
"""name -> (trainer.grad_accum_steps, data.batch_size): the same 16 samples per rank and optimizer step."""


def _job(checkpoint_dir: Path, accum_steps: int, batch_size: int) -> JobConfig:
    job = JobConfig(
        model=MlpConfig(hidden_sizes=[16]),
        data=SyntheticConfig(num_samples=512, input_shape=[8], batch_size=batch_size),
        trainer=TrainerConfig(max_steps=STEPS, log_every_n_steps=1, grad_accum_steps=accum_steps),
        tracking=TrackingConfig(enabled=False),
        checkpoint=CheckpointConfig(dir=str(checkpoint_dir)),
    )
    validate(job)
    return job


def _rank(world_rank: int, ports_text: str, out_text: str) -> None:
    """One rank's process: train both setups, one process group each, and count DDP's all-reduced buckets."""
    ports, out_dir = [int(port) for port in ports_text.split(",")], Path(out_text)
    import orchestrator.train.timing as timing

    buckets = []
    real_hook = timing.allreduce_hook

    def counting_hook(process_group, bucket):
        buckets.append(bucket.index())
        return real_hook(process_group, bucket)

    timing.allreduce_hook = counting_hook  # what SyncTimer's communication hook hands each bucket to
    outcome = {}
    for port, (name, (accum_steps, batch_size)) in zip(ports, SETUPS.items()):
        set_master_in_child(port)
        buckets.clear()
        reports, result = train_here(
            _job(out_dir / name, accum_steps, batch_size), out_dir / name, world_rank, world_size=2
        )
        losses = [
            r.metrics["train/loss"] for r in reports if isinstance(r, MetricsReport) and "train/loss" in r.metrics
        ]
        outcome[name] = {
            "losses": losses,
            "buckets": len(buckets),
            "weights": result.model_state,
            "digest": result.params_digest,
        }
    torch.save(outcome, out_dir / f"rank{world_rank}.pt")


def test_accumulating_k_micro_batches_equals_one_batch_of_k_times_b_under_ddp(tmp_path):
    # plain child processes: multiprocessing's spawn would leave its resource tracker process running
    ports = ",".join(map(str, free_ports(len(SETUPS))))
    codes = run_ranks("tests.train.test_accumulation:_rank", 2, [ports, str(tmp_path)], timeout_s=120)
    assert codes == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    accumulated, one_batch = ranks[0]["accumulated"], ranks[0]["one batch"]
    assert len(accumulated["losses"]) == STEPS
    assert accumulated["losses"] == pytest.approx(one_batch["losses"], rel=1e-5)
    for name, weight in one_batch["weights"].items():
        torch.testing.assert_close(accumulated["weights"][name], weight, rtol=1e-5, atol=1e-6)
    for setup in SETUPS:  # DDP kept the replicas identical
        assert ranks[0][setup]["digest"] == ranks[1][setup]["digest"]
    # the tiny model is one bucket: one all-reduce per optimizer step, also with 4 micro-batches per step
    assert [rank[setup]["buckets"] for rank in ranks for setup in SETUPS] == [STEPS] * 4
