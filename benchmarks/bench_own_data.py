"""Samples/s of the built-in loop on your own data set (a DataLoader) against the in-memory path, same data.

One rank in this process, as a worker runs it (build_trainer and train: DDP in a one-rank gloo group,
logging, checkpoints), one torch thread. Modes:

  in-memory     model=cnn data=digits: batches are index slices of tensors (the built-in path)
  loader-w0     the same tensors and CNN as `_target_`s (benchmarks/own_data/parts.py): a DataLoader over a
                TensorDataset, batches collated in the training process (data.num_workers=0)
  loader-w1     the same with one DataLoader worker process
  png-w1        the example package's data set (examples/own_model): 8x8 PNG files decoded with PIL per
                item, one DataLoader worker

The rate is rank 0's train/samples_per_s over the log windows after the first (warm-up). Modes run
interleaved, repetition by repetition, so drift on a shared machine hits them alike.

    python benchmarks/bench_own_data.py --reps 3 --epochs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "examples" / "own_model")]

COMMON = [
    "tracking.enabled=false",
    "trainer.log_every_n_steps=10",
    "data.batch_size=64",
    "optim.lr=0.003",
    "checkpoint.keep_last=1",
]
MODES = {
    "in-memory": ["model=cnn", "data=digits"],
    "loader-w0": ["model._target_=own_data.parts.cnn", "data._target_=own_data.parts.digits", "data.num_workers=0"],
    "loader-w1": ["model._target_=own_data.parts.cnn", "data._target_=own_data.parts.digits", "data.num_workers=1"],
    "png-w1": ["model._target_=own_data.parts.cnn", "data._target_=digitpng.data.build", "data.num_workers=1"],
}


def run_once(overrides: list[str], workdir: Path) -> tuple[float, float]:
    """(median samples/s after the first log window, wall seconds of train())."""
    import torch

    from orchestrator.config.compose import compose_job
    from orchestrator.lifecycle.rank_reports import MetricsReport
    from orchestrator.planning.rank_specs import WorkerSpec
    from orchestrator.train.loop import TrainContext, train
    from orchestrator.worker.ddp import process_group

    job = compose_job(overrides, workdir)
    spec = WorkerSpec(
        world_rank=0,
        local_rank=0,
        node_rank=0,
        world_size=1,
        local_world_size=1,
        bundle_index=0,
        node_id="n",
        node_ip="127.0.0.1",
        backend="gloo",
        torch_threads=1,
        env={},
    )
    reports: list = []
    with tempfile.TemporaryDirectory() as checkpoints, process_group(spec, torch.device("cpu"), 60):
        context = TrainContext(
            spec=spec,
            device=torch.device("cpu"),
            emit=reports.append,
            stop_requested=lambda: False,
            checkpoint_dir=Path(checkpoints),
        )
        started = time.perf_counter()
        train(job, context)
        wall = time.perf_counter() - started
    rates = [
        r.metrics["train/samples_per_s"]
        for r in reports
        if isinstance(r, MetricsReport) and "train/samples_per_s" in r.metrics
    ]
    return statistics.median(rates[1:]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MODES))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)

    modes = args.modes.split(",")
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as workdir:
        pngs = Path(workdir) / "pngs"
        for rep in range(args.reps):
            for mode in modes:
                overrides = [*MODES[mode], *COMMON, f"trainer.max_epochs={args.epochs}"]
                if mode == "png-w1":
                    overrides.append(f"+data.root={pngs}")
                os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
                results[mode].append(run_once(overrides, Path(workdir)))
                rate, wall = results[mode][-1]
                print(f"rep {rep + 1} {mode}: {rate:,.0f} samples/s, train() {wall:.1f} s", file=sys.stderr)
    base = statistics.median(rate for rate, _ in results[modes[0]])
    print(f"| mode | samples/s | train() s | samples/s / {modes[0]} |")
    print("| --- | --- | --- | --- |")
    for mode in modes:
        rates, walls = [r for r, _ in results[mode]], [w for _, w in results[mode]]
        print(
            f"| {mode} | {statistics.median(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | "
            f"{statistics.median(walls):.1f} | {statistics.median(rates) / base:.3f}x |"
        )


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
