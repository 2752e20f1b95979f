"""What the orchestrator costs against bare torchrun: one workload, every launcher, interleaved, in one run.

The workload (benchmarks/overhead/workload.py): a 1.3M-parameter MLP on synthetic tensors, global
batch 256, 300 steps, 2 gloo workers with one thread each. Each repetition runs every mode once, in
alternating order, each as a fresh command (a cold start, as a user pays it); the -warm modes run last
in a repetition, while the Ray head they use is up (an idle head's processes take CPU from whatever
else runs, so it is stopped before the next repetition's other modes):

  torchrun          torchrun --standalone --nproc_per_node=2 workload.py
  script            orchestrator train entrypoint=script script.path=workload.py (embedded Ray, tracking and
                    monitoring on)
  builtin           orchestrator train model=mlp data=synthetic with the same model, batch, steps and optimizer
  builtin-off       the same with tracking.enabled=false monitor.enabled=false
  raytrain          Ray Train's TorchTrainer running the workload's train_loop (pip install -e '.[bench]')
  bare-ray          the floor of any launcher on Ray actors: a placement group, two plain actors running
                    train_loop with torchrun's variables set by hand, nothing else (overhead/bare_ray.py)
  script-warm,      script, builtin and bare-ray with cluster.address=<a Ray head this benchmark starts with
  builtin-warm,     `ray start --head` (explicit ports, its own --temp-dir) and stops by PID>
  bare-ray-warm
  script-pool,      script and builtin on that head with cluster.pool=bench: the ranks are leased from a warm
  builtin-pool      pool of 2 workers (`orchestrator pool up`, started before these modes, removed after)

Measured per run: total wall (launch to exit), time to the first optimizer step (launch to rank 0's
time.time() after its first step) and the steady-state rate (samples of steps 61..300 over rank 0's
time for them). The script modes report through the workload's own JSON; the built-in loop through
the same fields, taken from its reports by a JobObserver (benchmarks/overhead/builtin.py).

    .venv/bin/python benchmarks/bench_overhead.py                      # every mode, 3 repetitions
    .venv/bin/python benchmarks/bench_overhead.py --reps 5 --modes torchrun,script,builtin

Where the orchestrator's modes record their runs: `--tracking sqlite` (the default) is a local SQLite
file, as on a laptop; `--tracking server` is an `mlflow server` on 127.0.0.1 (over its own SQLite file)
that this benchmark starts before the first mode and stops by PID at the end, as a team's cluster
has one: the driver then talks HTTP and does not open the store itself.

Before/after a change, in the same run: `git archive <commit> | tar -x -C /tmp/base`, then
`--base-src /tmp/base --modes torchrun,script,script@base,builtin,builtin@base`: an `@base` mode runs
with that checkout's orchestrator first on PYTHONPATH. The -warm@base modes run only the driver from
the checkout: a running cluster's workers import whatever its `ray start` found (this checkout), so
they compare changes on the driver's side only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE / "overhead"))

from ray_head import RayHead  # noqa: E402

from orchestrator.tracking.mlflow_server import MlflowServer, free_port, local_spec  # noqa: E402

WORKLOAD = HERE / "overhead" / "workload.py"
PYTHON = sys.executable
ORCHESTRATOR = [PYTHON, "-m", "orchestrator"]
# the built-in loop's equivalent of the workload: 256 -> 1024 -> 1024 -> 10, AdamW at 1e-3, 128 per worker
# per step, one pass over 76,800 training samples (the 776 held out make the end-of-run evaluation small)
BUILTIN = [
    "model=mlp",
    "model.hidden_sizes=[1024,1024]",
    "data=synthetic",
    "data.input_shape=[256]",
    "data.num_classes=10",
    "data.batch_size=128",
    "data.num_samples=77576",
    "data.test_fraction=0.01",
    "trainer.max_steps=300",
    "optim.lr=0.001",
    "optim.schedule=constant",
]
OFF = ["tracking.enabled=false", "monitor.enabled=false"]
POOL = "bench"
MODES = [
    "torchrun",
    "script",
    "builtin",
    "builtin-off",
    "raytrain",
    "bare-ray",
    "script-warm",
    "builtin-warm",
    "bare-ray-warm",
    "script-pool",
    "builtin-pool",
]
BASE_MODES = ["script@base", "builtin@base", "builtin-off@base", "script-warm@base", "builtin-warm@base"]


def command(mode: str, result: Path, run_dir: Path, head: "RayHead | None") -> list[str]:
    """The command line of one run of `mode`, writing its timings to `result`."""
    if mode == "torchrun":
        return [
            PYTHON,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(WORKLOAD),
            "--result",
            str(result),
        ]
    if mode == "raytrain":
        return [PYTHON, str(HERE / "overhead" / "raytrain.py"), str(result), str(run_dir / "ray-train")]
    if mode.startswith("bare-ray"):
        return [PYTHON, str(HERE / "overhead" / "bare_ray.py"), str(result), *([head.address] if head else [])]
    warm = [f"cluster.address={head.address}"] if mode.endswith(("-warm", "-pool")) else []
    if mode.endswith("-pool"):
        warm.append(f"cluster.pool={POOL}")
    if mode.startswith("script"):
        return [
            *ORCHESTRATOR,
            "train",
            "entrypoint=script",
            f"script.path={WORKLOAD}",
            f"script.args=[--result,{result}]",
            *warm,
        ]
    overrides = BUILTIN + (OFF if mode == "builtin-off" else []) + warm
    return [PYTHON, str(HERE / "overhead" / "builtin.py"), str(result), *overrides]


def _on_head(mode: str) -> bool:
    return mode.endswith(("-warm", "-pool"))


@contextlib.contextmanager
def pool_up(head: "RayHead") -> Iterator[None]:
    """A warm pool of 2 workers on `head` (`orchestrator pool up`) for the -pool modes, removed after them: a
    standing pool that jobs come to, so its start is not theirs."""
    pool = [*ORCHESTRATOR, "pool"]
    where = ["--name", POOL, "--address", head.address]
    env = {**os.environ, **head.driver_env()}
    subprocess.run([*pool, "up", *where, "--workers", "2"], env=env, check=True, stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        subprocess.run([*pool, "down", *where], env=env, check=True, stdout=subprocess.DEVNULL)


def run_once(mode: str, run_dir: Path, tracking_uri: str, head, base_src: "Path | None") -> dict:
    """One cold run of `mode`: its wall time, time to first step and steady-state samples/s."""
    run_dir.mkdir(parents=True)
    result = run_dir / "result.json"
    plain_mode, _, base = mode.partition("@")
    argv = command(plain_mode, result, run_dir, head)
    if plain_mode not in ("torchrun", "raytrain", "bare-ray", "bare-ray-warm"):
        argv += [f"tracking.uri={tracking_uri}", "tracking.experiment=overhead", f"checkpoint.dir={run_dir / 'ckpt'}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(head.driver_env() if _on_head(plain_mode) else {})}
    if base:
        env["PYTHONPATH"] = str(base_src)
    with open(run_dir / "output.log", "w") as log:
        launched_at, started = time.time(), time.monotonic()
        code = subprocess.run(argv, cwd=run_dir, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        wall_s = time.monotonic() - started
    if code != 0 or not result.exists():
        raise RuntimeError(f"{mode} failed (exit code {code}); see {run_dir / 'output.log'}")
    timings = json.loads(result.read_text())
    return {
        "wall_s": wall_s,
        "first_step_s": timings["first_step_at"] - launched_at,
        "samples_per_s": timings["steady_samples_per_s"],
    }


def create_store(tracking_uri: str) -> None:
    """Create the store once (directly or through the server), so no run pays MLflow's first-use migration."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri).search_experiments()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, from {', '.join(MODES)}")
    parser.add_argument("--work-dir", help="where runs, logs and the MLflow store go (default: a new temp dir)")
    parser.add_argument("--base-src", type=Path, help="a checkout of the orchestrator for the @base modes")
    parser.add_argument(
        "--tracking",
        choices=("sqlite", "server"),
        default="sqlite",
        help="where runs are recorded: a local SQLite file, or an mlflow server this benchmark starts",
    )
    args = parser.parse_args()
    modes = args.modes.split(",")
    unknown = sorted(set(modes) - set(MODES) - set(BASE_MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}: use {', '.join(MODES + BASE_MODES)}")
    if any("@" in mode for mode in modes) and args.base_src is None:
        parser.error("@base modes need --base-src")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-overhead-")).resolve()
    with contextlib.ExitStack() as stack:
        if args.tracking == "server":
            # an mlflow server on a free port of 127.0.0.1, over its own SQLite file, stopped by PID at the end
            server = MlflowServer(local_spec(work / "mlflow-server", port=free_port()), work / "mlflow-server.log")
            tracking_uri = stack.enter_context(server).spec.url
        else:
            tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
        create_store(tracking_uri)
        print(f"work dir: {work}; runs recorded in {tracking_uri}", flush=True)
        run_modes(args, modes, work, tracking_uri)
    return 0


def run_modes(args: argparse.Namespace, modes: list[str], work: Path, tracking_uri: str) -> None:
    """Every mode `args.reps` times, interleaved, then the table."""
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    # an idle Ray head keeps a few processes busy on the same cores: it is up only while the warm modes run
    warm = [mode for mode in modes if mode.partition("@")[0].endswith("-warm")]
    pooled = [mode for mode in modes if mode.endswith("-pool")]
    cold = [mode for mode in modes if mode not in warm and mode not in pooled]
    for rep in range(args.reps):
        for mode in cold if rep % 2 == 0 else list(reversed(cold)):
            report(rep, mode, results, run_once(mode, work / f"{rep}-{mode}", tracking_uri, None, args.base_src))
        if warm or pooled:
            head = RayHead(work / f"ray-head-{rep}")
            try:
                head.start()
                for mode in warm if rep % 2 == 0 else list(reversed(warm)):
                    report(
                        rep, mode, results, run_once(mode, work / f"{rep}-{mode}", tracking_uri, head, args.base_src)
                    )
                if pooled:  # last: the pool holds the head's CPUs while it is up
                    with pool_up(head):
                        for mode in pooled if rep % 2 == 0 else list(reversed(pooled)):
                            result = run_once(mode, work / f"{rep}-{mode}", tracking_uri, head, args.base_src)
                            report(rep, mode, results, result)
            finally:
                head.stop()
    print()
    print(table(results, args.reps))


def report(rep: int, mode: str, results: dict[str, list[dict]], result: dict) -> None:
    """Keep one run's result and print it."""
    results[mode].append(result)
    print(
        f"rep {rep + 1} {mode:13s} wall {result['wall_s']:6.1f} s  first step {result['first_step_s']:5.1f} s"
        f"  {result['samples_per_s']:8,.0f} samples/s",
        flush=True,
    )


def table(results: dict[str, list[dict]], reps: int) -> str:
    """Median (min-max) of each measure per mode, and each median's ratio to torchrun's."""

    def cell(values: list[float], digits: int) -> str:
        return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"

    base = (
        {
            key: statistics.median(run[key] for run in results["torchrun"])
            for key in ("wall_s", "first_step_s", "samples_per_s")
        }
        if results.get("torchrun")
        else None
    )
    lines = [
        f"median (min-max) of {reps} interleaved repetitions; ratios are medians over torchrun's",
        "| mode | total wall s | first step s | steady samples/s | wall / torchrun | first step - torchrun s "
        "| samples/s / torchrun |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for mode, runs in results.items():
        walls, firsts, rates = ([run[key] for run in runs] for key in ("wall_s", "first_step_s", "samples_per_s"))
        ratios = (
            ("-", "-", "-")
            if base is None
            else (
                f"{statistics.median(walls) / base['wall_s']:.2f}x",
                f"{statistics.median(firsts) - base['first_step_s']:+.1f}",
                f"{statistics.median(rates) / base['samples_per_s']:.3f}x",
            )
        )
        lines.append(
            f"| {mode} | {cell(walls, 1)} | {cell(firsts, 1)} | {cell(rates, 0)} | " + " | ".join(ratios) + " |"
        )
    if "builtin" in results and "builtin-off" in results:
        on, off = (
            statistics.median(run["samples_per_s"] for run in results[mode]) for mode in ("builtin", "builtin-off")
        )
        lines.append(f"\ntracking + monitoring on vs off (built-in loop, steady samples/s): {on / off:.3f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
