"""Running the built-in loop in this process as rank r of a gloo group: no Ray, no MLflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

from orchestrator.config.schema import JobConfig
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.train.loop import TrainContext, train
from orchestrator.worker.ddp import process_group
from tests.helpers import free_ports

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on the loopback interface right now (for MASTER_PORT)."""
    return free_ports(1)[0]


def rank_spec(world_rank: int, world_size: int, device: torch.device = torch.device("cpu")) -> WorkerSpec:
    """A rank on this host: gloo on the CPU, NCCL on `device` when it is a GPU."""
    on_gpu = device.type == "cuda"
    return WorkerSpec(
        world_rank=world_rank,
        local_rank=world_rank,
        node_rank=0,
        world_size=world_size,
        local_world_size=world_size,
        bundle_index=world_rank,
        node_id="n",
        node_ip="127.0.0.1",
        backend="nccl" if on_gpu else "gloo",
        torch_threads=1,
        env={},
        cuda_device=(device.index or 0) if on_gpu else None,
    )


def train_here(
    job: JobConfig,
    checkpoint_dir: Path,
    world_rank: int = 0,
    world_size: int = 1,
    resume_from: Optional[Path] = None,
    device: torch.device = torch.device("cpu"),
    emit: Optional[Callable[[object], None]] = None,
) -> tuple[list, object]:
    """Train `job` as this rank (MASTER_ADDR/MASTER_PORT must be set); returns (reports, result).

    `emit`, if given, also sees every report as the loop sends it.
    """
    spec, reports = rank_spec(world_rank, world_size, device), []

    def collect(report) -> None:
        reports.append(report)
        if emit is not None:
            emit(report)

    with process_group(spec, device, timeout_s=120):
        context = TrainContext(
            spec=spec,
            device=device,
            emit=collect,
            stop_requested=lambda: False,
            checkpoint_dir=checkpoint_dir,
            resume_from=resume_from,
        )
        return reports, train(job, context)


def use_master(monkeypatch) -> None:
    """Point this process's rendezvous at a free loopback port (restored after the test)."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))


def set_master_in_child(port: int) -> None:
    """The rendezvous of a rank in a child process (its environment dies with it).

    Each process group needs a port of its own: a rank that rejoins on the port of a group it just
    left can reach the old store, still open on the other rank, and the new rendezvous hangs.
    """
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)


def run_ranks(function: str, world_size: int, args: list[str], timeout_s: float) -> list[int]:
    """Run `function` ("package.module:name", called as name(world_rank, *args) with string args) as each rank of
    `world_size` in a plain child process of its own; returns their exit codes.

    Plain processes, not multiprocessing's spawn, which would leave its resource tracker running. A child
    still running at the end (stuck in a rendezvous whose peer failed) is killed.
    """
    module, name = function.split(":")
    # a rank that returned ends as `exit` would but without the interpreter's teardown, where a gloo thread
    # letting go of a tensor aborts the process now and then (pytorch/pytorch#190489; docs/your-code.md)
    code = (
        f"import atexit, os, sys; from {module} import {name}; {name}(int(sys.argv[1]), *sys.argv[2:]); "
        "atexit._run_exitfuncs(); sys.stdout.flush(); sys.stderr.flush(); os._exit(0)"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(rank), *args],
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for rank in range(world_size)
    ]
    try:
        return [child.wait(timeout=timeout_s) for child in children]
    finally:
        for child in children:  # a no-op for a child that ended
            child.kill()
            child.wait()
