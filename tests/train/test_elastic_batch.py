"""Elastic batches on gloo ranks in child processes (no Ray): a job of 3 workers that resumes a checkpoint on 2
(and grows back to 3) with scaling.elastic_batch=keep_global ends where the uninterrupted 3-rank run ends, under
DDP and FSDP; keep_per_worker (a smaller global batch on 2 ranks) ends elsewhere.

A global batch of 3 x 1 x 3 = 9 samples on 2 ranks is the hardest split: shares of 5 and 4 samples, so every
step the second rank runs a weightless stand-in as its fifth micro-batch to keep the collectives in lockstep."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from orchestrator.config.load import validate
from orchestrator.config.schema import (
    CheckpointConfig,
    JobConfig,
    MlpConfig,
    ScalingConfig,
    SyntheticConfig,
    TrackingConfig,
    TrainerConfig,
)
from orchestrator.lifecycle.rank_reports import MetricsReport
from orchestrator.train.sharded_checkpoint import read_trainer_state, sharded_path
from tests.helpers import free_ports
from tests.train.ranks import run_ranks

pytestmark = pytest.mark.slow  # ranks in child processes

BATCH, ACCUM = 1, 3
GLOBAL_BATCH = 3 * BATCH * ACCUM
TRAIN_SAMPLES = 90
"""112 samples less the 22 held out: 10 steps of the global batch per epoch, none short."""
EPOCHS, STEPS_PER_EPOCH = 2, TRAIN_SAMPLES // GLOBAL_BATCH
TOLERANCE = 1e-5
"""Absolute, on every parameter after 20 AdamW steps. A resized run adds the same samples with the same weights
in another order (2 partial gradients summed by gloo instead of 3, 2/9 x each sample's loss instead of 1/3 x a
mean of 3 per rank), so each gradient differs by a few float32 ulps (~1e-7 relative); AdamW's update
m/sqrt(v) passes that on relatively, and lr 0.003 x 20 steps keeps the parameters within ~1e-7 of each other
(measured: 3e-8, one ulp of the largest weight, 0.36). 1e-5 leaves a margin of 300, while another global batch
moves them by 1e-2 and weighting the 5 micro-batches 1/5 each instead of by their samples by 4e-3."""
RESIZE_AT, GROW_AT = 4, 12
"""Steps of the 3-rank checkpoint resumed on 2 ranks, and of the 2-rank checkpoint resumed on 3 again."""


def _job(folder: Path, strategy: str = "ddp", elastic_batch: str = "keep_global") -> JobConfig:
    job = JobConfig(
        model=MlpConfig(hidden_sizes=[16]),
        data=SyntheticConfig(num_samples=112, input_shape=[8], batch_size=BATCH),
        trainer=TrainerConfig(max_epochs=EPOCHS, log_every_n_steps=2, grad_accum_steps=ACCUM),
        scaling=ScalingConfig(num_workers=3, min_workers=2, strategy=strategy, elastic_batch=elastic_batch),
        tracking=TrackingConfig(enabled=False),
        checkpoint=CheckpointConfig(dir=str(folder), every_n_steps=4, keep_last=10),
    )
    validate(job)
    return job


PHASES = {
    # name: (ranks, strategy, elastic_batch, checkpoint resumed: (phase, step) or None)
    "uninterrupted": (3, "ddp", "keep_global", None),
    "resized": (2, "ddp", "keep_global", ("uninterrupted", RESIZE_AT)),
    "per-worker": (2, "ddp", "keep_per_worker", ("uninterrupted", RESIZE_AT)),
    "resized-fsdp": (2, "fsdp", "keep_global", ("uninterrupted", RESIZE_AT)),  # FSDP loads DDP's checkpoints
    "grown": (3, "ddp", "keep_global", ("resized", GROW_AT)),
}
ORDER = ["uninterrupted", "resized", "per-worker", "resized-fsdp", "grown"]
"""The phases each of 3 child processes runs one after the other (one process group each; a rank beyond a phase's
world skips it): process start-up (importing torch) is most of this module's time, so it is paid once."""


def _ranks(world_rank: int, ports_text: str, out_text: str) -> None:
    """One rank's process: each phase in ORDER it has a rank in; what rank 0 saw goes to out/<phase>.pt."""
    from tests.train.ranks import set_master_in_child, train_here

    out = Path(out_text)
    for name, port in zip(ORDER, ports_text.split(",")):
        world_size, strategy, elastic_batch, source = PHASES[name]
        if world_rank >= world_size:
            continue
        set_master_in_child(int(port))
        job = _job(out / name, strategy, elastic_batch)
        # the checkpoint is complete once its phase's ranks return: a rank that skipped ahead waits for them in
        # the rendezvous before it reads anything
        resume_from = sharded_path(out / source[0], source[1]) if source else None
        reports, result = train_here(job, out / name, world_rank, world_size, resume_from=resume_from)
        if world_rank == 0:
            metrics = [report for report in reports if isinstance(report, MetricsReport)]
            scaling = [(r.step, dict(r.metrics)) for r in metrics if "scaling/world_size" in r.metrics]
            torch.save({"step": result.step, "weights": result.model_state, "scaling": scaling}, out / f"{name}.pt")


@pytest.fixture(scope="module")
def phases(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("elastic")
    ports = ",".join(map(str, free_ports(len(ORDER))))
    codes = run_ranks("tests.train.test_elastic_batch:_ranks", 3, [ports, str(out)], 240)
    assert codes == [0, 0, 0], f"exit codes {codes}"
    return {name: {**torch.load(out / f"{name}.pt", weights_only=False), "folder": out / name} for name in PHASES}


def _largest_difference(one: dict, other: dict) -> float:
    assert one.keys() == other.keys()
    return max((one[key].double() - other[key].double()).abs().max().item() for key in one)


def test_keeping_the_global_batch_on_fewer_ranks_ends_where_the_uninterrupted_run_ends(phases):
    full = phases["uninterrupted"]
    assert full["step"] == EPOCHS * STEPS_PER_EPOCH
    for name in ("resized", "resized-fsdp", "grown"):
        # the same number of steps: max_epochs counts steps of the kept global batch, so the schedule holds
        assert phases[name]["step"] == full["step"], name
        difference = _largest_difference(phases[name]["weights"], full["weights"])
        assert difference < TOLERANCE, f"{name}: {difference}"


def test_keeping_each_workers_batch_changes_the_training_by_far_more_than_the_tolerance(phases):
    full, per_worker = phases["uninterrupted"], phases["per-worker"]
    smaller = 2 * BATCH * ACCUM  # the rest of the epochs takes more, smaller steps
    assert (
        per_worker["step"]
        == RESIZE_AT + (TRAIN_SAMPLES - RESIZE_AT * GLOBAL_BATCH) // smaller + TRAIN_SAMPLES // smaller
    )
    assert _largest_difference(per_worker["weights"], full["weights"]) > 100 * TOLERANCE


def test_every_attempt_reports_its_world_size_and_global_batch_at_its_first_step(phases):
    expected = {
        "uninterrupted": [(0, 3, GLOBAL_BATCH)],
        "resized": [(RESIZE_AT, 2, GLOBAL_BATCH)],
        "per-worker": [(RESIZE_AT, 2, 2 * BATCH * ACCUM)],
        "grown": [(GROW_AT, 3, GLOBAL_BATCH)],
    }
    for name, reports in expected.items():
        assert phases[name]["scaling"] == [
            (step, {"scaling/world_size": float(world), "scaling/global_batch": float(batch)})
            for step, world, batch in reports
        ], name


def test_a_checkpoint_records_its_world_size_global_batch_and_position(phases):
    for name, world_size, global_batch in [("uninterrupted", 3, 9), ("resized", 2, 9), ("per-worker", 2, 6)]:
        state = read_trainer_state(sharded_path(phases[name]["folder"], 8))
        assert (state["world_size"], state["global_batch"]) == (world_size, global_batch), name
        resumed_at = 0 if name == "uninterrupted" else RESIZE_AT
        assert state["samples_in_epoch"] == resumed_at * GLOBAL_BATCH + (8 - resumed_at) * global_batch, name
