"""Restart latency: time from a worker's SIGKILL to the first optimizer step after the restart.

Runs one long CPU job (2 workers, gloo) through `orchestrator train` on an embedded Ray instance,
kills a worker process `--kills` times (each time once the previous restart trains again), and
reads each restart's phase timings back from the run's MLflow tags:

    detection   kill -> the controller begins the restart (the death reaches the driver)
    teardown    survivors leave the failed attempt, lost workers are killed
    placement   replacement workers start in their bundles, every rank starts a new attempt
    pg          init_process_group in the new attempt (rank 0)
    load        reading the checkpoint and restoring state (rank 0)
    first step  the first optimizer step after the restart (rank 0)

With `--spares N` the same job runs a second time with N hot spares (failure.spare_workers=N, the embedded
instance then gets N more CPUs), and both tables are printed with the ratio of their medians.

Usage: python benchmarks/bench_restart.py [--kills 5] [--spares 1]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

PHASES = [
    ("detection", None),
    ("teardown", "teardown"),
    ("placement", "placement_and_start"),
    ("pg", "process_group_s"),
    ("build", "build_s"),
    ("load", "checkpoint_load_s"),
    ("first step", "first_step_s"),
]


def _workers(driver: psutil.Process) -> list[psutil.Process]:
    """The job's rank processes (descendants of the driver's embedded Ray): a rank's title names the call it is
    in (`ray::WorkerActor.reports`, the driver's long poll), an idle spare's does not."""
    found = []
    for process in driver.children(recursive=True):
        try:
            if "WorkerActor.reports" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def _idle_spares(driver: psutil.Process) -> int:
    """Spares that are ready: a rank process that runs no call (its title is the bare class name, not
    `ray::WorkerActor.warm` while it still loads torch and the data set)."""
    count = 0
    for process in driver.children(recursive=True):
        try:
            if " ".join(process.cmdline()).strip() == "ray::WorkerActor":
                count += 1
        except psutil.NoSuchProcess:
            continue
    return count


def _tags(store: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("orchestrator")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return runs[0].data.tags if runs else {}


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def measure(kills: int, workdir: Path, spares: int = 0) -> list[dict[str, float]]:
    """Kill a rank's worker `kills` times; one dict of phase seconds per restart."""
    store = f"sqlite:///{workdir}/mlflow.db"
    command = [
        sys.executable,
        "-m",
        "orchestrator",
        "train",
        "model=mlp",
        "trainer.max_steps=10000000",
        "checkpoint.every_n_steps=50",
        "trainer.log_every_n_steps=50",
        f"failure.max_restarts={kills + 1}",
        "tracking.log_model=false",
        f"tracking.uri={store}",
        f"failure.spare_workers={spares}",
        f"cluster.num_cpus={2 + spares}",
    ]
    # the driver's console goes to a file: its restart messages are printed with the table
    with (workdir / "driver.log").open("w") as log:
        driver_process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    driver = psutil.Process(driver_process.pid)
    rows = []
    try:
        _wait(lambda: list((workdir / "checkpoints").glob("*/step_*/.metadata")), 300, "the first checkpoint")
        for number in range(1, kills + 1):
            time.sleep(2.0)  # let the attempt train for a while, as a real failure would find it
            ranks: list[psutil.Process] = []
            _wait(lambda: len(ranks.extend(_workers(driver)) or ranks) >= 2, 60, "both ranks in their long poll")
            # failures come minutes apart in practice, not seconds: a kill finds the spare that the last restart
            # started already warm, as it would then
            _wait(lambda: _idle_spares(driver) >= spares, 120, "the spares to be started and warm")
            victim = random.choice(ranks)
            killed_at = time.time()
            os.kill(victim.pid, signal.SIGKILL)
            _wait(lambda: f"restart.{number}.first_step_at" in _tags(store), 300, f"restart {number}")
            rows.append(_row(_tags(store), number, killed_at))
    finally:
        driver_process.send_signal(signal.SIGINT)
        driver_process.wait(timeout=120)
    return rows


def _row(tags: dict[str, str], number: int, killed_at: float) -> dict[str, float]:
    prefix = f"restart.{number}."
    row = {
        "total": float(tags[prefix + "first_step_at"]) - killed_at,
        "detection": float(tags[prefix + "began_at"]) - killed_at,
    }
    for label, key in PHASES[1:]:
        row[label] = float(tags.get(prefix + key, "nan"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--spares", type=int, default=0, help="also measure with this many hot spares")
    args = parser.parse_args()
    medians = [_table(args.kills, 0)]
    if args.spares:
        medians.append(_table(args.kills, args.spares))
        print(f"with {args.spares} spare(s) / without: {medians[1] / medians[0]:.2f}x (median kill -> first step)")


def _table(kills: int, spares: int) -> float:
    """Measure and print one table; returns the median total."""
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as workdir:
        rows = measure(kills, Path(workdir), spares)
        console = (Path(workdir) / "driver.log").read_text().splitlines()
    print(f"failure.spare_workers={spares}; driver console, restart lines:")
    for line in console:
        if "restart" in line and "WARNING" not in line:
            print("  " + line.strip()[:200])
    columns = ["total"] + [label for label, _ in PHASES]
    print("restart | " + " | ".join(f"{name:>10}" for name in columns))
    for number, row in enumerate(rows, 1):
        print(f"{number:>7} | " + " | ".join(f"{row[name]:>9.2f}s" for name in columns))
    print(" median | " + " | ".join(f"{statistics.median(row[name] for row in rows):>9.2f}s" for name in columns))
    return statistics.median(row["total"] for row in rows)


if __name__ == "__main__":
    main()
