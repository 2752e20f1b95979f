"""The warm pool (`orchestrator pool up|status|down`, cluster.pool): jobs lease its started workers, nothing is left
after `down`, and a job the pool cannot serve is told why before it takes anything."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import psutil
import pytest

from launchers.jobs.job_runner import run_job
from orchestrator.cli.commands import main
from orchestrator.cli.console import Console
from orchestrator.errors import ConfigError, LaunchError
from tests.helpers import compose_job, job_resources_left, wait_until
from tests.own_code import importable_package

POOL = "testpool"
# the user's own model and data, importable from a folder of theirs only: on the pool's workers, which started
# before the job, through the job's PYTHONPATH set per attempt
OWN = """
import torch
from torch.utils.data import TensorDataset


def net():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def data():
    inputs = torch.randn(160, 8, generator=torch.Generator().manual_seed(3))
    labels = inputs[:, :3].argmax(dim=1)
    return TensorDataset(inputs[:128], labels[:128]), TensorDataset(inputs[128:], labels[128:])
"""


# a torchrun-style script that says whether torch was imported before its first line (it ran in the worker's
# script process started ahead) and which variables and threads it got, and reports through the script API
SCRIPT = """
import json, os, sys
preloaded = "torch" in sys.modules
import torch
import orchestrator
out = os.path.join(sys.argv[1], "rank" + os.environ["RANK"] + ".json")
with open(out, "w") as file:
    json.dump({"preloaded": preloaded, "ppid": os.getppid(), "arenas": os.environ.get("MALLOC_ARENA_MAX")}, file)
orchestrator.report({"preloaded": float(preloaded)}, step=1)
"""


def _job(cluster, tmp_path, *more: str):
    return compose_job(
        [
            *([] if any(item.startswith("model._target_") for item in more) else ["model=mlp"]),
            "scaling.num_workers=2",
            "trainer.max_steps=6",
            "checkpoint.every_n_steps=6",
            "tracking.log_model=false",
            "monitor.enabled=false",
            "failure.max_restarts=0",
            f"cluster.address={cluster.address}",
            f"cluster.pool={POOL}",
            *more,
        ],
        tmp_path,
    )


def _status(capsys) -> dict[int, str]:
    """pid -> who holds the worker, from `pool status`."""
    capsys.readouterr()
    assert main(["pool", "status", "--name", POOL]) == 0
    rows = [row for row in capsys.readouterr().out.splitlines()[1:] if row.split()[0].isdigit()]  # not the notes
    return {int(row.split()[2]): " ".join(row.split()[3:]) for row in rows}


def test_jobs_lease_the_pools_warm_workers_one_after_another_and_down_leaves_nothing(
    ray_cluster, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    assert main(["pool", "up", "--name", POOL, "--workers", "2"]) == 0
    try:
        assert main(["pool", "up", "--name", POOL, "--workers", "2"]) == 1  # one owner per name
        pool = _status(capsys)
        assert len(pool) == 2 and set(pool.values()) == {"free"}

        importable_package(tmp_path / "code", monkeypatch, {"poolnet": OWN})
        own = ["model._target_=poolnet.net", "data._target_=poolnet.data", "data.batch_size=16"]
        ranks = []
        for number, overrides in enumerate([[], own]):  # a built-in model, then the user's own
            summary = run_job(_job(ray_cluster, tmp_path / f"job{number}", *overrides), Console(io.StringIO(), False))
            assert summary.outcome.status == "FINISHED", summary.outcome.error
            ranks.append({spec.pid for spec in summary.outcome.workers})
        assert ranks[0] == ranks[1] == set(pool), "both jobs ran in the pool's processes"
        assert _status(capsys) == pool  # given back, free again, the same processes

        # a script runs in the process each pool worker started ahead with torch imported; a job with another value
        # of a variable read as a process starts (glibc's malloc reads this one) gets a new process
        script = tmp_path / "train.py"
        script.write_text(SCRIPT)
        for number, (extra, warm) in enumerate(
            [([], True), (["+cluster.runtime_env.env_vars.MALLOC_ARENA_MAX=2"], False)]
        ):
            out = tmp_path / f"script{number}"
            out.mkdir()
            job = _job(ray_cluster, out, "entrypoint=script", f"script.path={script}", f"script.args=[{out}]", *extra)
            summary = run_job(job, Console(io.StringIO(), False))
            assert summary.outcome.status == "FINISHED", summary.outcome.error
            seen = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(2)]
            assert {spec.pid for spec in summary.outcome.workers} == set(pool)
            assert [rank["preloaded"] for rank in seen] == [warm, warm], seen
            assert {rank["ppid"] for rank in seen} == set(pool), "each script is a child of its pool worker"
            assert [rank["arenas"] for rank in seen] == ([None, None] if warm else ["2", "2"])
            assert summary.outcome.result is not None
            assert summary.outcome.result.metrics["preloaded"] == float(warm)  # the API's pipe, from either process
        assert _status(capsys) == pool

        # what the pool cannot serve is refused before anything is leased
        with pytest.raises(LaunchError, match="the job needs 3"):
            run_job(_job(ray_cluster, tmp_path / "big", "scaling.num_workers=3"), Console(io.StringIO(), False))
        with pytest.raises(LaunchError, match=r"each hold \{'CPU': 1.0\}, the job's ranks each need \{'CPU': 2.0\}"):
            run_job(_job(ray_cluster, tmp_path / "wide", "scaling.cpus_per_worker=2"), Console(io.StringIO(), False))
        assert _status(capsys) == pool

        # a worker that died is replaced: the pool keeps its size, and a job runs on it
        dead = min(pool)
        psutil.Process(dead).kill()
        wait_until(lambda: not psutil.pid_exists(dead), 30, "the killed worker gone")
        renewed = _status(capsys)
        assert len(renewed) == 2 and dead not in renewed and set(renewed.values()) == {"free"}
        summary = run_job(_job(ray_cluster, tmp_path / "after"), Console(io.StringIO(), False))
        assert summary.outcome.status == "FINISHED", summary.outcome.error
        assert {spec.pid for spec in summary.outcome.workers} == set(renewed)
        pool = renewed
    finally:
        assert main(["pool", "down", "--name", POOL]) == 0
    wait_until(lambda: job_resources_left("orchestrator-pool-") == ([], []), 30, "the pool's actors and group gone")
    wait_until(lambda: not any(psutil.pid_exists(pid) for pid in pool), 30, "the pool's processes ended")
    assert main(["pool", "status", "--name", POOL]) == 1  # no such pool any more


def test_a_job_on_a_pool_that_is_not_up_fails_saying_so(ray_cluster, tmp_path):
    with pytest.raises(LaunchError, match=f"cluster.pool={POOL}: there is no such pool"):
        run_job(_job(ray_cluster, tmp_path), Console(io.StringIO(), False))


def test_a_pool_needs_a_running_cluster_and_a_fixed_size_job(tmp_path):
    with pytest.raises(ConfigError) as raised:
        compose_job(["cluster.pool=p", "failure.spare_workers=1", "scaling.min_workers=1"], tmp_path)
    text = str(raised.value)
    assert "cluster.pool=p is not valid: a pool lives on a running cluster" in text
    assert "failure.spare_workers=1 is not valid: with cluster.pool=p it must be 0" in text
    assert "scaling.min_workers=1 is not valid: with cluster.pool=p it must be null" in text


# a job's driver that leases the pool's one worker and then waits, as a driver does while its job runs
LEASING_DRIVER = """
import sys
import ray
from launchers.pool.pool_client import PoolSource
from launchers.workers.worker_shelf import GroupShape

ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
shape = GroupShape(bundles=((("CPU", 1.0),),), strategy="PACK", workers_per_bundle=1, spare_bundles=0, runtime_env="{}")
PoolSource(sys.argv[2]).take(shape, "job-of-a-killed-driver")
print("leased", flush=True)
sys.stdin.read()
"""


def test_the_workers_of_a_driver_that_died_holding_them_are_taken_back_and_replaced(ray_cluster, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    assert main(["pool", "up", "--name", POOL, "--workers", "1"]) == 0
    try:
        (before,) = _status(capsys)
        driver = subprocess.Popen(
            [sys.executable, "-c", LEASING_DRIVER, ray_cluster.address, POOL],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert driver.stdout is not None and driver.stdout.readline() == "leased\n"
            # held while its driver lives, although the driver let go of its own reference to the lease's token
            assert _status(capsys) == {before: "job-of-a-killed-driver"}
        finally:
            driver.kill()  # as the OOM killer or a lost machine ends a driver: nothing is given back
            driver.communicate()
        wait_until(lambda: "job-of-a-killed-driver" not in _status(capsys).values(), 60, "the lease taken back")
        (after,) = _status(capsys)
        assert after != before and not psutil.pid_exists(before), "the worker that may run its ranks was replaced"
        capsys.readouterr()
        assert main(["pool", "status", "--name", POOL]) == 0
        assert "taken back from job-of-a-killed-driver: its driver ended" in capsys.readouterr().out
    finally:
        assert main(["pool", "down", "--name", POOL]) == 0
    wait_until(lambda: job_resources_left("orchestrator-pool-") == ([], []), 30, "the pool's actors and group gone")
