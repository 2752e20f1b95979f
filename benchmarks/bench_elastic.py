"""Resize and grow times of an elastic job: a node lost -> training on fewer workers, a node back -> training on all.

Starts a Ray cluster in this process (`ray.cluster_utils.Cluster`: a head and two worker nodes of one CPU each,
the only nodes with the `elastic_slot` resource the ranks ask for), runs `orchestrator train` against it
(scaling.num_workers=2, scaling.min_workers=1, the built-in mlp on digits), and `--cycles` times removes the
node of one rank, waits until the job trains on the other, adds a node back and waits until it trains on both.
Each time is read back from the run's MLflow tags (`restart.N.first_step_at`, the first optimizer step of the
attempt after restart N):

    resize   the node removed -> the first step on 1 worker. It includes scaling.placement_timeout_s, the time
             the job waits for the lost worker to be placed again before it continues without it.
    grow     the node added (it joined the cluster) -> the first step on 2 workers. It includes the wait for the
             next capacity check (scaling.resize_check_s) and for the ranks' next log step, where they stop
             and write a checkpoint.

Usage: python benchmarks/bench_elastic.py [--cycles 5] [--placement-timeout 2] [--resize-check 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SLOT = "elastic_slot"


def _tags(store: str) -> dict[str, str]:
    from mlflow import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("orchestrator")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return runs[0].data.tags if runs else {}


def _wait(predicate, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}; the job's console:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _rank_node(cluster) -> object:
    """A worker node that runs a rank now (the job's ranks are on the worker nodes only)."""
    from ray.util.state import list_actors

    actors = [
        actor
        for actor in list_actors(filters=[("state", "=", "ALIVE")], limit=10_000)
        if actor.class_name == "WorkerActor"
    ]
    used = {actor.node_id for actor in actors}
    return next(node for node in cluster.list_all_nodes() if node.node_id in used and not node.is_head())


def measure(cycles: int, workdir: Path, placement_timeout_s: float, resize_check_s: float) -> list[dict[str, float]]:
    """Lose and regain a node `cycles` times; one dict of seconds per cycle."""
    import ray
    from ray.cluster_utils import Cluster

    ray_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": True, "dashboard_port": 0, "temp_dir": ray_dir},
    )
    rows: list[dict[str, float]] = []
    try:
        ray.init(address=cluster.address, logging_level="WARNING")
        for _ in range(2):
            cluster.add_node(num_cpus=1, resources={SLOT: 1})
        cluster.wait_for_nodes()
        store = f"sqlite:///{workdir}/mlflow.db"
        log_path = workdir / "driver.log"
        command = [
            sys.executable,
            "-m",
            "orchestrator",
            "train",
            f"cluster.address={cluster.address}",
            "model=mlp",
            "trainer.max_steps=10000000",
            "trainer.log_every_n_steps=10",
            "checkpoint.every_n_steps=50",
            "scaling.num_workers=2",
            "scaling.min_workers=1",
            f"+scaling.resources_per_worker.{SLOT}=1",
            f"scaling.placement_timeout_s={placement_timeout_s}",
            f"scaling.resize_check_s={resize_check_s}",
            f"failure.max_restarts={cycles + 1}",
            "tracking.log_model=false",
            f"tracking.uri={store}",
        ]
        with log_path.open("w") as log:
            driver = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(
                lambda: list((workdir / "checkpoints").glob("*/step_*/.metadata")),
                300,
                "the first checkpoint",
                log_path,
            )
            for cycle in range(cycles):
                lost, grown = 2 * cycle + 1, 2 * cycle + 2
                time.sleep(2.0)  # let the attempt train for a while, as a real loss would find it
                node = _rank_node(cluster)
                removed_at = time.time()
                cluster.remove_node(node)
                _wait(
                    lambda: f"restart.{lost}.first_step_at" in _tags(store), 300, f"restart {lost} (resize)", log_path
                )
                time.sleep(2.0)
                cluster.add_node(num_cpus=1, resources={SLOT: 1})
                cluster.wait_for_nodes()
                added_at = time.time()
                _wait(
                    lambda: f"restart.{grown}.first_step_at" in _tags(store), 300, f"restart {grown} (grow)", log_path
                )
                tags = _tags(store)
                rows.append(
                    {
                        "resize": float(tags[f"restart.{lost}.first_step_at"]) - removed_at,
                        "detection": float(tags[f"restart.{lost}.began_at"]) - removed_at,
                        "grow": float(tags[f"restart.{grown}.first_step_at"]) - added_at,
                        "to stop": float(tags[f"restart.{grown}.began_at"]) - added_at,
                        "sizes": float(tags[f"restart.{grown}.workers"].split("->")[1]),
                    }
                )
        finally:
            driver.send_signal(signal.SIGINT)
            driver.wait(timeout=120)
        console = log_path.read_text().splitlines()
        print("driver console, resize lines:")
        for line in console:
            if "continuing on" in line or "growing" in line or "died" in line:
                print("  " + line.strip()[:200])
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--placement-timeout", type=float, default=2.0, help="scaling.placement_timeout_s")
    parser.add_argument("--resize-check", type=float, default=1.0, help="scaling.resize_check_s")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-elastic-") as workdir:
        rows = measure(args.cycles, Path(workdir), args.placement_timeout, args.resize_check)
    print(f"scaling.placement_timeout_s={args.placement_timeout:g}, scaling.resize_check_s={args.resize_check:g}")
    columns = ["resize", "detection", "grow", "to stop"]
    print("cycle | " + " | ".join(f"{name:>10}" for name in columns) + " | workers after grow")
    for number, row in enumerate(rows, 1):
        print(f"{number:>5} | " + " | ".join(f"{row[name]:>9.2f}s" for name in columns) + f" | {row['sizes']:.0f}")
    print(" median | " + " | ".join(f"{statistics.median(row[name] for row in rows):>9.2f}s" for name in columns))
    print(
        f"resize minus scaling.placement_timeout_s: {statistics.median(row['resize'] for row in rows) - args.placement_timeout:.2f}s"
    )


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    main()
