"""DDP against FSDP in the built-in loop, side by side in one run: per-rank memory, speed, and how long a
checkpoint holds the training loop, synchronous against asynchronous.

Each configuration runs the real loop (orchestrator.train.loop.train) as gloo ranks in child processes,
one thread each, with no Ray and no MLflow in the way: what differs between the rows is only the
strategy, the world size and checkpoint.async_save. The numbers are the loop's own metrics, as a
run logs them to MLflow:
  memory/rank<r>/model_state_mib   parameters + optimizer state this rank holds (its shard under FSDP)
  memory/rank<r>/peak_mib          the rank's peak RSS (CUDA max allocated on a GPU)
  train/samples_per_s              steady rate: the log windows after the first
  checkpoint/blocked_s             the training thread's wait per checkpoint (mean of all but the first)
plus "training MiB": the rank's peak RSS minus its RSS just before the model was built (torch, the
interpreter and the process group excluded).

The model: gpt with 6 blocks of width 768 (42.8M parameters), AdamW, batches of 4 sequences of 64 tokens
per rank, so parameters, gradients and optimizer state (about 490 MiB per replica, without gradients)
dominate what a rank holds, as in the models FSDP is for, rather than activations.

    .venv/bin/python benchmarks/bench_fsdp.py                 # every row (about 10 minutes on 2 cores)
    .venv/bin/python benchmarks/bench_fsdp.py --rows ddp-2,fsdp-2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

ROWS = {
    # name: (strategy, workers, async_save)
    "ddp-2": ("ddp", 2, True),
    "fsdp-2": ("fsdp", 2, True),
    "ddp-2-sync": ("ddp", 2, False),
    "fsdp-2-sync": ("fsdp", 2, False),
    "ddp-4": ("ddp", 4, True),
    "fsdp-4": ("fsdp", 4, True),
}
STEPS = 12
LOG_EVERY = 3
CHECKPOINT_EVERY = 3


def _job(strategy: str, async_save: bool, folder: Path):
    from orchestrator.config.load import validate
    from orchestrator.config.schema import (
        CheckpointConfig,
        GptConfig,
        JobConfig,
        MonitorConfig,
        ScalingConfig,
        TokensConfig,
        TrackingConfig,
        TrainerConfig,
    )

    job = JobConfig(
        model=GptConfig(layers=6, heads=12, width=768, context=64),
        data=TokensConfig(num_sequences=1024, seq_len=64, vocab_size=256, batch_size=4),
        trainer=TrainerConfig(max_steps=STEPS, log_every_n_steps=LOG_EVERY),
        scaling=ScalingConfig(strategy=strategy),
        tracking=TrackingConfig(enabled=False),
        monitor=MonitorConfig(enabled=False),
        checkpoint=CheckpointConfig(
            dir=str(folder), every_n_steps=CHECKPOINT_EVERY, keep_last=2, async_save=async_save
        ),
    )
    validate(job)
    return job


def rank_main(row: str, world_rank: int, port: int, out: Path) -> None:
    """One rank of one row (a child process)."""
    import torch

    from orchestrator.lifecycle.rank_reports import MetricsReport
    from orchestrator.train.loop import TrainContext, train
    from orchestrator.worker.ddp import process_group
    from tests.train.ranks import rank_spec  # the in-process gloo rank the tests use

    strategy, world_size, async_save = ROWS[row]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # one thread per rank, as a worker with scaling.cpus_per_worker=1
    spec = rank_spec(world_rank, world_size)
    reports: list = []
    device = torch.device("cpu")
    with process_group(spec, device, timeout_s=600):
        before = _rss_now()
        job = _job(strategy, async_save, out / row)
        context = TrainContext(spec, device, reports.append, lambda: False, out / row)
        train(job, context)
    metrics = [report.metrics for report in reports if isinstance(report, MetricsReport)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    (out / f"{row}.rank{world_rank}.json").write_text(
        json.dumps({"metrics": metrics, "rss_before": before, "peak": peak})
    )


def _rss_now() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_row(row: str, out: Path) -> list[dict]:
    _, world_size, _ = ROWS[row]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = (
        "import sys, pathlib; sys.path.insert(0, sys.argv[4]); from bench_fsdp import rank_main; "
        "rank_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), pathlib.Path(sys.argv[5]))"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, row, str(rank), str(port), str(HERE), str(out)],
            cwd=HERE.parent,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for rank in range(world_size)
    ]
    try:
        codes = [child.wait(timeout=1800) for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()
    if codes != [0] * world_size:
        raise SystemExit(f"{row}: ranks exited with {codes}")
    return [json.loads((out / f"{row}.rank{rank}.json").read_text()) for rank in range(world_size)]


def summarise(ranks: list[dict]) -> dict[str, float]:
    logs = [m for m in ranks[0]["metrics"] if "train/loss" in m]
    last = logs[-1]
    world_size = len(ranks)
    blocked = [m["checkpoint/blocked_s"] for m in ranks[0]["metrics"] if "checkpoint/blocked_s" in m]
    return {
        "model_state_mib": max(last[f"memory/rank{r}/model_state_mib"] for r in range(world_size)),
        "peak_mib": max(last[f"memory/rank{r}/peak_mib"] for r in range(world_size)),
        "training_mib": max((rank["peak"] - rank["rss_before"]) / 2**20 for rank in ranks),
        "samples_per_s": statistics.mean(m["train/samples_per_s"] for m in logs[1:]),
        "blocked_s": statistics.mean(blocked[1:]) if len(blocked) > 1 else blocked[0],
        "loss": last["train/loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    args = parser.parse_args()
    rows = args.rows.split(",")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-fsdp-") as scratch:
        for row in rows:
            results[row] = summarise(run_row(row, Path(scratch)))
            print(f"{row}: {results[row]}", flush=True)
    print()
    print(
        "| row | workers | model state MiB/rank | peak RSS MiB/rank | training MiB/rank | samples/s | blocked s/ckpt | loss |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row, value in results.items():
        print(
            f"| {row} | {ROWS[row][1]} | {value['model_state_mib']:.1f} | {value['peak_mib']:.0f} | "
            f"{value['training_mib']:.0f} | {value['samples_per_s']:.1f} | {value['blocked_s']:.3f} | "
            f"{value['loss']:.4f} |"
        )
    print()
    for workers in (2, 4):
        ddp, fsdp = results.get(f"ddp-{workers}"), results.get(f"fsdp-{workers}")
        if ddp and fsdp:
            print(
                f"{workers} workers, FSDP / DDP: model state {fsdp['model_state_mib'] / ddp['model_state_mib']:.2f}x, "
                f"peak {fsdp['peak_mib'] / ddp['peak_mib']:.2f}x, training memory "
                f"{fsdp['training_mib'] / ddp['training_mib']:.2f}x, samples/s "
                f"{fsdp['samples_per_s'] / ddp['samples_per_s']:.2f}x"
            )
    for strategy in ("ddp", "fsdp"):
        synchronous, asynchronous = results.get(f"{strategy}-2-sync"), results.get(f"{strategy}-2")
        if synchronous and asynchronous:
            print(
                f"{strategy} 2 workers, blocked per checkpoint, async / sync: "
                f"{asynchronous['blocked_s']:.3f} s / {synchronous['blocked_s']:.3f} s = "
                f"{asynchronous['blocked_s'] / synchronous['blocked_s']:.2f}x"
            )


if __name__ == "__main__":
    main()
