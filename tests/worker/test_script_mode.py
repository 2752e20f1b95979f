"""entrypoint=script: an unmodified torchrun-style script runs the same under torchrun and under us."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import torch

from launchers.job_runner import run_job
from orchestrator.console import Console
from tests.helpers import assert_no_job_resources, compose_job, wait_until

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_script.py"


def _script_job(tmp_path: Path, *args: str, extra=()):
    overrides = ["entrypoint=script", f"script.path={SCRIPT}", f"script.args=[{','.join(args)}]",
                 "tracking.log_model=false", *extra]
    return compose_job(overrides, tmp_path)


def test_the_same_script_reaches_the_same_weights_under_torchrun_and_the_orchestrator(ray_cluster, tmp_path):
    torchrun_out = tmp_path / "torchrun.pt"
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(SCRIPT), "--out", str(torchrun_out)], check=True, capture_output=True, timeout=180,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    ours_out = tmp_path / "ours.pt"
    out = io.StringIO()
    job = _script_job(tmp_path, "--out", str(ours_out))
    summary = run_job(job, Console(io.StringIO(), interactive=False, out=out))
    assert summary.outcome.status == "FINISHED", summary.outcome.error
    theirs, ours = torch.load(torchrun_out), torch.load(ours_out)
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[name], ours[name]) for name in theirs)
    assert "[rank 0] rank 0 finished 20 steps" in out.getvalue()
    assert "[rank 1] rank 1 finished 20 steps" in out.getvalue()
    seen = [json.loads(Path(f"{ours_out}.rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [(s["RANK"], s["WORLD_SIZE"], s["LOCAL_RANK"], s["LOCAL_WORLD_SIZE"], s["GROUP_RANK"]) for s in seen] == \
        [("0", "2", "0", "2", "0"), ("1", "2", "1", "2", "0")]
    assert seen[0]["MASTER_ADDR"] == seen[1]["MASTER_ADDR"] and seen[0]["MASTER_PORT"] == seen[1]["MASTER_PORT"]
    assert seen[0]["GLOO_SOCKET_IFNAME"]
    assert_no_job_resources()


def test_a_rank_that_exits_non_zero_fails_the_job_with_its_output(ray_cluster, tmp_path):
    # no restarts: retrying a script that fails on purpose only repeats this (restarts have their own tests)
    job = _script_job(tmp_path, "--out", str(tmp_path / "x.pt"), "--fail-rank", "1", extra=["failure.max_restarts=0"])
    summary = run_job(job, Console(io.StringIO(), interactive=False, out=io.StringIO()))
    outcome = summary.outcome
    assert outcome.status == "FAILED"
    assert outcome.error.startswith("rank 1 on ") and "ddp_script.py exited with code 3" in outcome.error
    assert "rank 1 fails on purpose" not in outcome.error and "ddp_script.py" in outcome.error
    assert_no_job_resources()
    # rank 0's script was blocked in a collective when its worker was killed: it must not outlive it
    marker = str(tmp_path / "x.pt")
    wait_until(lambda: not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])],
               15, "the scripts of the killed workers to exit")
