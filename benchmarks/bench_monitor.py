"""Monitoring overhead: the same CPU job with monitoring off and on, interleaved, in one run.

    .venv/bin/python benchmarks/bench_monitor.py [--reps 5] [--steps 2000]

Each job is `model=mlp data=synthetic trainer.max_steps=<steps>` on one embedded Ray instance (started
once). A run's throughput is the median of rank 0's logged train/samples_per_s windows after the
first (start-up); an arm's is the median over its runs. The arms run in a rotating order in every
repetition, so drift of the machine's load spreads over all of them. It also times the monitor's
own work: one host sample (psutil, the job's two ranks) and the driver's zero-timeout check.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

ARMS = {
    "off": ["monitor.enabled=false"],
    "on (interval 5 s, default)": ["monitor.enabled=true"],
    "on (interval 0.5 s)": ["monitor.enabled=true", "monitor.interval_s=0.5"],
}


def run_once(overrides: list[str], workdir: Path) -> tuple[float, float, float]:
    """(median samples/s after the first logged window, wall seconds, monitor CPU seconds) of one job."""
    from mlflow import MlflowClient

    from launchers.jobs.job_runner import run_job
    from orchestrator.cli.console import Console
    from orchestrator.config.compose import compose_job

    job = compose_job(overrides, workdir)
    started = time.monotonic()
    summary = run_job(job, Console(io.StringIO(), interactive=False), overrides)
    wall = time.monotonic() - started
    if summary.outcome.status != "FINISHED":
        raise SystemExit(f"job failed: {summary.outcome.error}")
    client = MlflowClient(job.tracking.uri)
    history = client.get_metric_history(summary.run_id, "train/samples_per_s")
    values = [metric.value for metric in sorted(history, key=lambda m: m.step)]
    monitor_cpu_s = client.get_run(summary.run_id).data.metrics.get("system/node0/monitor_cpu_s", 0.0)
    return statistics.median(values[1:]), wall, monitor_cpu_s


def sampling_cost_ms(refresh_children: bool, repeats: int = 200) -> float:
    """Milliseconds one host sample of two ranks takes (the GPU part is NVML's, absent here)."""
    from orchestrator.monitoring.host_probe import HostProbe

    probe = HostProbe({0: os.getpid(), 1: os.getppid()})
    probe.start()
    started = time.perf_counter()
    for _ in range(repeats):
        probe.sample(refresh_children=refresh_children)
    return (time.perf_counter() - started) / repeats * 1000


def poll_cost_us(repeats: int = 2000) -> float:
    """Microseconds of the driver's zero-timeout ray.wait on one outstanding call (done at most every 0.2 s)."""
    import ray

    pending = ray.remote(num_cpus=0)(lambda: time.sleep(60)).remote()
    started = time.perf_counter()
    for _ in range(repeats):
        ray.wait([pending], timeout=0)
    cost = (time.perf_counter() - started) / repeats * 1e6
    ray.cancel(pending, force=True)
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    import ray

    ray.init(address="local", logging_level="WARNING", include_dashboard=False)
    common = [
        "model=mlp",
        "data=synthetic",
        f"trainer.max_steps={args.steps}",
        "tracking.log_model=false",
        "tracking.experiment=bench-monitor",
    ]
    results: dict[str, list[tuple[float, float, float]]] = {arm: [] for arm in ARMS}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            names = list(ARMS)
            for rep in range(args.reps):
                order = names[rep % len(names) :] + names[: rep % len(names)]
                for arm in order:
                    rate, wall, monitor_cpu_s = run_once(common + ARMS[arm], Path(workdir))
                    results[arm].append((rate, wall, monitor_cpu_s))
                    print(
                        f"rep {rep + 1} {arm:<28} {rate:>10,.0f} samples/s  {wall:6.1f} s  "
                        f"monitor CPU {monitor_cpu_s:.2f} s",
                        flush=True,
                    )
        print(
            f"\nhost sample: {sampling_cost_ms(False):.2f} ms ({sampling_cost_ms(True):.2f} ms when it also looks "
            f"for the workers' children, every 30 s); driver poll: {poll_cost_us():.0f} us"
        )
    finally:
        ray.shutdown()
    report(results, args)


def report(results: dict[str, list[tuple[float, float, float]]], args) -> None:
    """Medians per arm, each arm's throughput relative to monitoring off, and the monitor's CPU share.

    The share is the monitor process's CPU seconds (start-up included) over the CPU the job's two
    workers had (2 x wall time): what monitoring can take from training at most on a full node.
    """
    baseline = statistics.median(rate for rate, _, _ in results["off"])
    print(
        f"\n{args.reps} runs per arm, {args.steps} steps, load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        f"{'arm':<28} {'median samples/s':>16} {'ratio to off':>12} {'paired ratio':>12} {'median wall s':>13} "
        f"{'monitor CPU s':>13} {'monitor CPU share':>17}"
    )
    for arm, runs in results.items():
        rate = statistics.median(rate for rate, _, _ in runs)
        # each repetition's runs are neighbours in time: their ratio cancels most of the load's drift
        paired = statistics.median(run[0] / off[0] for run, off in zip(runs, results["off"]))
        wall = statistics.median(wall for _, wall, _ in runs)
        cpu = statistics.median(cpu for _, _, cpu in runs)
        share = statistics.median(cpu / (2 * wall) for _, wall, cpu in runs)
        print(
            f"{arm:<28} {rate:>16,.0f} {rate / baseline:>12.4f} {paired:>12.4f} {wall:>13.1f} {cpu:>13.2f} "
            f"{share:>16.2%}"
        )


if __name__ == "__main__":
    main()
