"""The driver at scale, simulated: planning, the controller's decisions and its report throughput at
64, 512 and 4,096 nodes of 8 GPUs (512, 4,096 and 32,768 ranks), on one core.

Everything on the driver's side is the real code: plan_on_cluster (plan_job and the placement
prediction that `orchestrator plan` and `train` both run), worker_specs, the Controller with its state
machine and failure policy, the routing observers (run records, console progress, restart records) and
the monitoring's SystemRecorder (metric names, tallies, straggler and idle-GPU detectors). Only what lies
beyond the driver is simulated: a worker group whose events are scripted and whose restarts return at
once, node monitors whose samples reach the SystemRecorder as JobMonitor hands them over (at a report,
every POLL_INTERVAL_S of controller time, without Ray), a clock that only moves when the simulation
moves it, a sink and a console that discard.

    .venv/bin/python benchmarks/bench_scale.py                  # every size (about 1 minute on 2 cores)
    .venv/bin/python benchmarks/bench_scale.py --nodes 64,512

Each second of the simulated job: one StepReport from every rank (the last node's ranks 40% slower: they
are stragglers), rank 0's metrics, and a sample from a fifth of the nodes (every node every 5 s, the
default monitor.interval_s), in batches of BATCH events per wait(). Decisions are the median of 5 (hangs:
3), each timed from a clean heap (gc.collect() first, as timeit does); the throughput is over 3 such
seconds after 6 of warm-up (straggler windows full), garbage collection on.

Targets at every size: each decision (a node failure to Restarting, a restart or resize back to Running,
a hang found, a group started) under 100 ms; planning and rank assignment under a second; the driver
keeps up with 1 StepReport per rank per second on one core.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "scale")]

from simulation import GPUS_PER_NODE, Simulation, cluster, job, placed_bundles, specs_for  # noqa: E402

from orchestrator.monitoring.node_sampler import targets_by_node  # noqa: E402
from orchestrator.planning.planned_job import plan_on_cluster  # noqa: E402

NODE_COUNTS = (64, 512, 4096)
DECISION_TARGET_S = 0.100
PLANNING_TARGET_S = 1.0
"""Planning runs once per job (and rank assignment once per start or resize): a second is the budget."""
REPORTS_PER_RANK_PER_S = 1.0
WARMUP_ROUNDS = 6
"""Heartbeat rounds before measuring: every straggler window (5 reports) full, every rank stepping."""
MEASURED_ROUNDS = 3
REPEATS = 5


# ---------------------------------------------------------------- measurements


def median_time(action: Callable[[], object], repeats: int = 3) -> float:
    """The median of `repeats` timings of `action`, in seconds."""
    timings = []
    for _ in range(repeats):
        gc.collect()
        began = time.perf_counter()
        action()
        timings.append(time.perf_counter() - began)
    return statistics.median(timings)


def planning(nodes: int) -> dict[str, float]:
    """Seconds to plan the job on the cluster, and to assign every rank its spec."""
    snapshot, config = cluster(nodes), job(nodes)
    planned = plan_on_cluster(config, snapshot)
    if not planned.prediction.placeable:
        raise SystemExit(f"the synthetic job does not fit: {planned.prediction.problems}")
    placed = placed_bundles(planned.prediction.nodes, snapshot)
    return {
        "plan_s": median_time(lambda: plan_on_cluster(config, snapshot)),
        "specs_s": median_time(lambda: specs_for(planned.plan, placed)),
    }


def decisions_and_throughput(nodes: int) -> dict[str, float]:
    """Median seconds of each decision, and the report throughput, of one simulated job."""
    sim = Simulation(nodes)
    start_s = sim.step_timed()
    sim.heartbeats(WARMUP_ROUNDS)
    gc.collect()
    seconds, cpu_seconds, reports = sim.heartbeats(MEASURED_ROUNDS)
    sample = sim.node_sample(0)
    sample_s = median_time(lambda: [sim.monitor.recorder.on_item(sample) for _ in range(100)]) / 100
    targets_s = median_time(lambda: targets_by_node(sim.specs))
    failures, restarts, resizes, hangs = [], [], [], []
    for repeat in range(REPEATS):
        failures.append(sim.lose_node((repeat + 1) % (nodes - 1)))
        restarts.append(sim.restart())
        sim.heartbeats(1)
        failures.append(sim.lose_node(0))
        resizes.append(sim.restart(sim.smaller if sim.ranks == len(sim.specs) else sim.specs))
        sim.heartbeats(1)
    for _ in range(3):
        hangs.append(sim.hang())
        sim.restart()
        sim.heartbeats(1)
    if sim.monitor.failure is not None:
        raise SystemExit(f"monitoring failed in the simulation: {sim.monitor.failure}")
    return {
        "start_s": start_s,
        "targets_s": targets_s,
        "failure_s": statistics.median(failures),
        "restart_s": statistics.median(restarts),
        "resize_s": statistics.median(resizes),
        "hang_s": statistics.median(hangs),
        "reports_per_s": reports / seconds,
        "cpu_reports_per_s": reports / cpu_seconds,
        "us_per_report": seconds / reports * 1e6,
        "us_per_sample": sample_s * 1e6,
    }


# ---------------------------------------------------------------- the table


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def table(results: dict[int, dict[str, float]]) -> list[str]:
    """The rows printed: one per measurement, one column per size; then how each grew with the ranks."""
    sizes = sorted(results)
    header = f"{'':<44}" + "".join(f"{f'{n} x 8 = {n * GPUS_PER_NODE:,}':>22}" for n in sizes)
    rows = [header, "-" * len(header)]

    def row(label: str, cell: Callable[[int, dict[str, float]], str]) -> None:
        rows.append(f"{label:<44}" + "".join(f"{cell(n, results[n]):>22}" for n in sizes))

    def timed(key: str, target: float) -> Callable[[int, dict[str, float]], str]:
        return lambda n, r: f"{r[key] * 1000:,.1f} ms {verdict(r[key] < target)}"

    def keeps_up(key: str) -> Callable[[int, dict[str, float]], str]:
        needed = lambda n: n * GPUS_PER_NODE * REPORTS_PER_RANK_PER_S  # noqa: E731
        return lambda n, r: f"{r[key]:,.0f} = {r[key] / needed(n):,.1f}x {verdict(r[key] >= needed(n))}"

    row("plan_on_cluster: plan + placement (< 1 s)", timed("plan_s", PLANNING_TARGET_S))
    row("worker_specs: every rank's spec (< 1 s)", timed("specs_s", PLANNING_TARGET_S))
    row("start: Pending -> Running", timed("start_s", DECISION_TARGET_S))
    row("node failure: Running -> Restarting", timed("failure_s", DECISION_TARGET_S))
    row("restart: Restarting -> Running", timed("restart_s", DECISION_TARGET_S))
    row("resize (-/+ 1 node): Restarting -> Running", timed("resize_s", DECISION_TARGET_S))
    row("hang found: Running -> Restarting", timed("hang_s", DECISION_TARGET_S))
    row("JobMonitor's targets_by_node per group", timed("targets_s", DECISION_TARGET_S))
    row("driver: us per report (samples included)", lambda n, r: f"{r['us_per_report']:,.1f} us")
    row("driver: reports/s (perf_counter) vs needed", keeps_up("reports_per_s"))
    row("driver: reports/s (process CPU time)", keeps_up("cpu_reports_per_s"))
    row("SystemRecorder.on_item: one node sample", lambda n, r: f"{r['us_per_sample']:,.0f} us")
    if len(sizes) > 1:
        first, last = sizes[0], sizes[-1]
        rows += [
            "",
            f"time at {last} nodes / time at {first} nodes ({last // first}x the ranks; 1x: independent of size):",
        ]
        for key, label in (
            ("specs_s", "worker_specs"),
            ("start_s", "start"),
            ("failure_s", "node failure"),
            ("restart_s", "restart"),
            ("resize_s", "resize"),
            ("hang_s", "hang found"),
            ("us_per_report", "per report"),
        ):
            rows.append(f"  {label:<14} {results[last][key] / results[first][key]:8.1f}x")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default=",".join(str(n) for n in NODE_COUNTS), help="comma-separated node counts")
    args = parser.parse_args()
    results: dict[int, dict[str, float]] = {}
    for nodes in (int(text) for text in args.nodes.split(",")):
        began = time.perf_counter()
        results[nodes] = {**planning(nodes), **decisions_and_throughput(nodes)}
        print(f"{nodes} nodes measured in {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
