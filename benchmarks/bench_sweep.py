"""Sweeps of short trials: worker reuse off against on (sweep.reuse_workers), and how well trials pack.

`--compare reuse` (the default): a 16-trial sweep, 1 epoch per trial, 8 trials of 1 worker then 8 of 2
workers, 2 trials at a time (hydra.launcher.max_concurrent=2) on a local Ray instance of 4 CPUs, once with
fresh workers for every trial (sweep.reuse_workers=false) and once reusing them (true); alternating order
per repetition. `--compare concurrency`: 8 trials of 1 worker one at a time against two at a time, on 2 CPUs.

Both run through `orchestrator train -m` (this process, the CLI's `main`). Wall time is the sweep's own
(`sweep/wall_s` of its parent run: from the parent run's creation to the end of the last trial); a trial's
duration is its child run's end minus start. Packing efficiency = sum of trial durations / (wall x
concurrency): 1.0 means the slots were never idle.

    .venv/bin/python benchmarks/bench_sweep.py                   # reuse off and on, once each
    .venv/bin/python benchmarks/bench_sweep.py --reps 2          # alternating order
    .venv/bin/python benchmarks/bench_sweep.py --compare concurrency
    .venv/bin/python benchmarks/bench_sweep.py --compare pool

`--compare pool`: the same 16 trials as 16 separate `orchestrator train` commands, one after another, on a
Ray head this benchmark starts (2 CPUs), each job starting its own workers and each leasing them from a
warm pool of 2 workers (`orchestrator pool up`, started before the jobs): each command's time from launch
to its first optimizer step, and the total.
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
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.cli.commands import main  # noqa: E402

TRIALS = ["optim.lr=1e-3,3e-3", "optim.name=adamw,sgd", "model.dropout=0.0,0.1"]  # 2 x 2 x 2 = 8 trials
TINY = [
    "model=mlp",
    "tracking.log_model=false",
    "monitor.enabled=false",
]
# Hydra's basic sweeper varies the last override fastest: 8 trials of 1 worker, then 8 of 2
SHAPES = ["scaling.num_workers=1,2", *TRIALS]


def run_sweep(address: str, work_dir: Path, concurrency: int, tag: str, extra: Sequence[str]) -> dict:
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
                    *extra,
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


def run_commands(pooled: bool, work_dir: Path, head, reps_tag: str) -> list[dict]:
    """The 16 jobs as separate commands on `head`, with their own workers or on the pool; per job its seconds
    from launch to the first step, and to its exit."""
    import itertools
    import json
    import subprocess
    import time

    here = Path(__file__).resolve().parent
    choices = [option.split("=", 1) for option in SHAPES]
    jobs = [
        [f"{key}={value}" for (key, _), value in zip(choices, values)]
        for values in itertools.product(*[values.split(",") for _, values in choices])
    ]
    env = {**os.environ, **head.driver_env()}
    timings = []
    for number, overrides in enumerate(jobs):
        run_dir = work_dir / f"{reps_tag}-{'pool' if pooled else 'own'}-{number}"
        run_dir.mkdir(parents=True)
        result = run_dir / "result.json"
        argv = [
            sys.executable,
            str(here / "overhead" / "builtin.py"),
            str(result),
            *TINY,
            "trainer.max_epochs=1",
            *overrides,
            f"cluster.address={head.address}",
            *([f"cluster.pool={POOL}"] if pooled else []),
            f"tracking.uri=sqlite:///{work_dir}/mlflow.db",
            f"checkpoint.dir={run_dir / 'ckpt'}",
        ]
        with open(run_dir / "output.log", "w") as log:
            launched_at, started = time.time(), time.monotonic()
            code = subprocess.run(argv, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
            wall_s = time.monotonic() - started
        if code != 0:
            raise RuntimeError(f"job {number} exited {code}; see {run_dir / 'output.log'}")
        first_step_at = json.loads(result.read_text())["first_step_at"]
        timings.append({"first_step_s": first_step_at - launched_at, "wall_s": wall_s})
    return timings


POOL = "bench-sweep"


def compare_pool(reps: int) -> None:
    """The 16 jobs as commands, with their own workers and on a pool, alternating per repetition."""
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parent / "overhead"))
    from ray_head import RayHead

    results: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as temp:
        work = Path(temp)
        from mlflow import MlflowClient

        MlflowClient(f"sqlite:///{work}/mlflow.db").search_experiments()  # the store's migration, once
        head = RayHead(work / "ray-head", num_cpus=2).start()
        pool = [sys.executable, "-m", "orchestrator", "pool"]
        where = ["--name", POOL, "--address", str(head.address)]
        env = {**os.environ, **head.driver_env()}
        try:
            for rep in range(reps):
                for pooled in (False, True) if rep % 2 == 0 else (True, False):
                    if pooled:
                        subprocess.run(
                            [*pool, "up", *where, "--workers", "2"], env=env, check=True, stdout=subprocess.DEVNULL
                        )
                    try:
                        timings = run_commands(pooled, work, head, f"r{rep}")
                    finally:
                        if pooled:
                            subprocess.run([*pool, "down", *where], env=env, check=True, stdout=subprocess.DEVNULL)
                    results[pooled].extend(timings)
                    firsts = [timing["first_step_s"] for timing in timings]
                    print(
                        f"{'pool' if pooled else 'own workers'}: 16 jobs, total {sum(t['wall_s'] for t in timings):.1f} s, "
                        f"first step median {statistics.median(firsts):.1f} s (min {min(firsts):.1f}, max {max(firsts):.1f})",
                        flush=True,
                    )
        finally:
            head.stop()
    own, pooled_first = (statistics.median(t["first_step_s"] for t in results[kind]) for kind in (False, True))
    print(
        f"median launch -> first step: own workers {own:.1f} s, pool {pooled_first:.1f} s: {own - pooled_first:.1f} s sooner"
    )


def main_bench() -> None:
    """Run the sweeps (alternating order per repetition) and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1, help="sweeps of each kind (default 1)")
    parser.add_argument("--compare", choices=["reuse", "concurrency", "pool"], default="reuse")
    args = parser.parse_args()
    if args.compare == "pool":
        compare_pool(args.reps)
        return
    if args.compare == "reuse":
        kinds = {"fresh": ["sweep.reuse_workers=false", *SHAPES], "reused": ["sweep.reuse_workers=true", *SHAPES]}
        results = _compare(kinds, concurrency=2, cpus=4, reps=args.reps, epochs=1)
        fresh, reused = (statistics.median(r["wall_s"] for r in results[kind]) for kind in kinds)
        print(f"median wall: fresh workers {fresh:.1f} s, reused {reused:.1f} s: {fresh / reused:.2f}x faster")
        return
    results = _compare({"one at a time": [], "two at a time": []}, concurrency=0, cpus=2, reps=args.reps, epochs=2)
    one, two = (statistics.median(r["wall_s"] for r in results[kind]) for kind in results)
    print(f"median wall: one at a time {one:.1f} s, two at a time {two:.1f} s: {one / two:.2f}x faster")


def _compare(kinds: dict[str, list[str]], concurrency: int, cpus: int, reps: int, epochs: int) -> dict[str, list[dict]]:
    """Each kind of sweep `reps` times, in alternating order, on one local Ray instance of `cpus` CPUs.
    concurrency 0: the kinds are max_concurrent 1 and 2 (in the order given)."""
    import ray

    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    context = ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level="ERROR")
    try:
        address = context.address_info["gcs_address"]
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as temp:
            for rep in range(reps):
                order = list(kinds) if rep % 2 == 0 else list(reversed(kinds))
                for kind in order:
                    at_once = concurrency or (1 + list(kinds).index(kind))
                    tag = f"{kind.replace(' ', '-')}-r{rep}"
                    extra = [f"trainer.max_epochs={epochs}", *(kinds[kind] or ["scaling.num_workers=1", *TRIALS])]
                    result = run_sweep(address, Path(temp), at_once, tag, extra)
                    results[kind].append(result)
                    print(
                        f"{kind} (max_concurrent={at_once}): {result['trials']} trials, wall {result['wall_s']:.1f} s, "
                        f"trial durations sum {result['sum_s']:.1f} s (mean {result['mean_s']:.1f} s), "
                        f"packing efficiency {result['packing']:.2f}",
                        flush=True,
                    )
    finally:
        ray.shutdown()
    return results


if __name__ == "__main__":
    main_bench()
