"""An 8-trial sweep with 2 trials at a time vs the same 8 trials one at a time, and how well trials pack.

Both sweeps run through `orchestrator train -m` (this process, the CLI's `main`) on one local Ray
instance started here with 2 CPUs, so that two 1-worker trials fill it; each trial is a tiny job
(mlp on digits, 1 worker, 2 epochs). Wall time is the sweep's own (`sweep/wall_s` of its parent run:
from the parent run's creation to the end of the last trial); a trial's duration is its child run's
end minus start. Packing efficiency = sum of trial durations / (wall x concurrency): 1.0 means the
slots were never idle. Trials that share the CPUs run slower each, so the sum grows with concurrency.

    .venv/bin/python benchmarks/bench_sweep.py            # one sweep of each
    .venv/bin/python benchmarks/bench_sweep.py --reps 2   # alternating order
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.cli.commands import main  # noqa: E402

TRIALS = ["optim.lr=1e-3,3e-3", "optim.name=adamw,sgd", "model.dropout=0.0,0.1"]  # 2 x 2 x 2 = 8 trials
TINY = [
    "model=mlp",
    "scaling.num_workers=1",
    "trainer.max_epochs=2",
    "tracking.log_model=false",
    "monitor.enabled=false",
]


def run_sweep(address: str, work_dir: Path, concurrency: int, tag: str) -> dict:
    """One sweep; its wall time, trial durations and packing efficiency from what MLflow recorded."""
    from mlflow import MlflowClient

    store = f"sqlite:///{work_dir}/mlflow.db"
    experiment = f"bench-{tag}"
    previous = os.getcwd()
    os.chdir(work_dir)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(
                [
                    "train",
                    "-m",
                    *TINY,
                    *TRIALS,
                    f"cluster.address={address}",
                    f"tracking.uri={store}",
                    f"tracking.experiment={experiment}",
                    f"hydra.sweep.dir={work_dir}/{experiment}",
                    f"hydra.launcher.max_concurrent={concurrency}",
                ]
            )
    finally:
        os.chdir(previous)
    if code != 0:
        raise RuntimeError(f"the sweep with max_concurrent={concurrency} exited {code}")
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    [parent] = [run for run in runs if "orchestrator.sweep_id" in run.data.tags]
    durations = [(run.info.end_time - run.info.start_time) / 1000 for run in runs if run is not parent]
    wall_s = parent.data.metrics["sweep/wall_s"]
    return {
        "concurrency": concurrency,
        "trials": len(durations),
        "wall_s": wall_s,
        "sum_s": sum(durations),
        "mean_s": statistics.mean(durations),
        "packing": sum(durations) / (wall_s * concurrency),
    }


def main_bench() -> None:
    """Run the sweeps (alternating order per repetition) and print the numbers."""
    import ray

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="sweeps of each kind (default 1)")
    args = parser.parse_args()
    results: dict[int, list[dict]] = {1: [], 2: []}
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        address = context.address_info["gcs_address"]
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as temp:
            for rep in range(args.reps):
                order = (1, 2) if rep % 2 == 0 else (2, 1)
                for concurrency in order:
                    result = run_sweep(address, Path(temp), concurrency, f"c{concurrency}-r{rep}")
                    results[concurrency].append(result)
                    print(
                        f"max_concurrent={concurrency}: {result['trials']} trials, wall {result['wall_s']:.1f} s, "
                        f"trial durations sum {result['sum_s']:.1f} s (mean {result['mean_s']:.1f} s), "
                        f"packing efficiency {result['packing']:.2f}",
                        flush=True,
                    )
    finally:
        ray.shutdown()
    one, two = (statistics.median(r["wall_s"] for r in results[c]) for c in (1, 2))
    print(f"median wall: one at a time {one:.1f} s, two at a time {two:.1f} s: {one / two:.2f}x faster")


if __name__ == "__main__":
    main_bench()
