"""entrypoint=script: an unmodified torchrun-style script runs the same under torchrun and under us."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

from launchers.jobs.job_runner import run_job
from orchestrator.cli.console import Console
from orchestrator.train.folder_lock import LOCK_NAME
from tests.helpers import assert_no_job_resources, compose_job, wait_until

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_script.py"


def _script_job(tmp_path: Path, *args: str, extra=()):
    overrides = [
        "entrypoint=script",
        f"script.path={SCRIPT}",
        f"script.args=[{','.join(args)}]",
        "tracking.log_model=false",
        *extra,
    ]
    return compose_job(overrides, tmp_path)


def test_the_same_script_reaches_the_same_weights_under_torchrun_and_the_orchestrator(ray_cluster, tmp_path):
    torchrun_out = tmp_path / "torchrun.pt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(SCRIPT),
            "--out",
            str(torchrun_out),
        ],
        check=True,
        capture_output=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
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
    assert [(s["RANK"], s["WORLD_SIZE"], s["LOCAL_RANK"], s["LOCAL_WORLD_SIZE"], s["GROUP_RANK"]) for s in seen] == [
        ("0", "2", "0", "2", "0"),
        ("1", "2", "1", "2", "0"),
    ]
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
    wait_until(
        lambda: not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])],
        15,
        "the scripts of the killed workers to exit",
    )


CONTRACT_SCRIPT = SCRIPT.parent / "contract_script.py"


def _contract_job(tmp_path: Path, *overrides: str):
    job = compose_job(
        [
            "entrypoint=script",
            f"script.path={CONTRACT_SCRIPT}",
            "scaling.num_workers=1",
            "tracking.log_model=false",
            # no monitoring lines: a warning between two drawings of the script's progress bar ends the drawn line
            # (as on a terminal), which the console-log test below does not expect
            "monitor.enabled=false",
            *overrides,
        ],
        tmp_path,
    )
    err, out = io.StringIO(), io.StringIO()
    summary = run_job(job, Console(err, interactive=False, out=out), overrides)
    return job, summary, err.getvalue(), out.getvalue()


def _contracts(out: str) -> list[dict]:
    prefix = "[rank 0] contract "
    return [json.loads(line[len(prefix) :]) for line in out.splitlines() if line.startswith(prefix)]


def test_script_argv_arrives_verbatim_with_torchruns_environment_and_stdout_is_in_the_console_log(
    ray_cluster, tmp_path
):
    from mlflow import MlflowClient

    job, summary, err, out = _contract_job(
        tmp_path, "script.argv=\"--lr 1e-3 --total-timesteps=16384 --flag null --n 1_000 --name 'a b'\""
    )
    assert summary.outcome.status == "FINISHED", summary.outcome.error
    [seen] = _contracts(out)
    assert seen["argv"] == [
        "--lr",
        "1e-3",
        "--total-timesteps=16384",
        "--flag",
        "null",
        "--n",
        "1_000",
        "--name",
        "a b",
    ]
    client = MlflowClient(job.tracking.uri)
    ray_name = client.get_run(summary.run_id).data.tags["orchestrator.ray_name"]
    assert seen["env"] == {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "TORCHELASTIC_RUN_ID": ray_name,
        "TORCHELASTIC_RESTART_COUNT": "0",
        "TORCHELASTIC_MAX_RESTARTS": "3",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
        "PYTHONBREAKPOINT": None,
    }
    console_log = Path(client.download_artifacts(summary.run_id, "console.log", str(tmp_path))).read_text()
    lines = console_log.splitlines()
    assert "[rank 0] done" in lines and any(line.startswith("[rank 0] contract {") for line in lines)
    # the progress bar was redrawn 10 times: the record keeps its final drawing, and an earlier one only where a
    # stdout line came in between (two pipes, read apart: the console ends the bar there, as a terminal would)
    drawn = [index for index, line in enumerate(lines) if "progress" in line]
    assert lines[drawn[-1]] == "[rank 0] progress 100%"
    assert all("progress" not in lines[index + 1] for index in drawn[:-1]), lines
    assert err.count("\r") == 10 - (len(drawn) - 1)  # the console itself still redrew it, where not interrupted
    assert_no_job_resources()


def test_a_script_that_exits_with_a_usage_error_is_not_restarted(ray_cluster, tmp_path):
    _, summary, err, out = _contract_job(tmp_path, "script.args=[--usage-error]")  # failure.max_restarts=3
    outcome = summary.outcome
    assert outcome.status == "FAILED" and outcome.restarts == 0
    assert "contract_script.py exited with code 2" in outcome.error and "failure.retry_script_errors" in outcome.error
    assert err.count("[rank 0] usage: contract_script.py") == 1 and len(_contracts(out)) == 1
    assert_no_job_resources()


def test_a_script_killed_by_a_signal_is_restarted_as_infrastructure_and_then_succeeds(ray_cluster, tmp_path):
    # script.args items go through Hydra: quoted '1e-3' is kept, unquoted true becomes True
    marker = tmp_path / "killed-once"
    _, summary, err, out = _contract_job(
        tmp_path,
        f"script.args=[--kill-once,{marker},--lr,'1e-3',--flag,true]",
        "failure.max_restarts=2",
        "failure.restart_on=infra_only",
        "+cluster.runtime_env.env_vars={PYTHONBREAKPOINT:pdb.set_trace,TORCH_NCCL_ASYNC_ERROR_HANDLING:'3'}",
    )
    outcome = summary.outcome
    assert outcome.status == "FINISHED" and outcome.restarts == 1, outcome.error
    assert "was killed by SIGKILL (signal 9); restart 1" in err
    first, second = _contracts(out)
    assert first["argv"] == second["argv"] == ["--kill-once", str(marker), "--lr", "1e-3", "--flag", "True"]
    assert [seen["env"]["TORCHELASTIC_RESTART_COUNT"] for seen in (first, second)] == ["0", "1"]
    # the worker started the restart's process as soon as the script died: it has torch imported already
    assert [seen["preloaded"] for seen in (first, second)] == [False, True]
    assert second["env"]["TORCHELASTIC_MAX_RESTARTS"] == "2"
    assert second["env"]["TORCHELASTIC_RUN_ID"] == first["env"]["TORCHELASTIC_RUN_ID"]
    # the user's own values from cluster.runtime_env win over Ray's debugger hook and torchrun's default
    assert second["env"]["PYTHONBREAKPOINT"] == "pdb.set_trace"
    assert second["env"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"
    assert "[rank 0] done" in out
    assert_no_job_resources()


API_SCRIPT = SCRIPT.parent / "api_script.py"


def _torchrun(out: Path, *args: str, checkpoints: Path, check: bool = True) -> str:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(API_SCRIPT),
            "--out",
            str(out),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "ORCHESTRATOR_CHECKPOINT_DIR": str(checkpoints)},
    )
    assert done.returncode == 0 or not check, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def api_reference(tmp_path_factory) -> dict:
    """The weights of an uninterrupted 30-step run of the API script under plain torchrun."""
    folder = tmp_path_factory.mktemp("api-reference")
    _torchrun(folder / "weights.pt", checkpoints=folder / "checkpoints")
    return torch.load(folder / "weights.pt")


def _same(weights: dict, reference: dict) -> bool:
    return weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in reference)


def test_the_api_script_under_torchrun_prints_reports_and_a_rerun_resumes_from_its_checkpoint(api_reference, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    killed = _torchrun(
        tmp_path / "weights.pt",
        "--kill-once",
        str(tmp_path / "killed"),
        "--kill-at",
        "12",
        checkpoints=checkpoints,
        check=False,
    )
    assert not (tmp_path / "weights.pt").exists()
    # the same command again (torchrun's own --max-restarts would do the same, when its gloo rendezvous holds)
    rerun = _torchrun(tmp_path / "weights.pt", checkpoints=checkpoints)
    assert _same(torch.load(tmp_path / "weights.pt"), api_reference)
    steps = [
        int(line.split(":")[0].removeprefix("step "))
        for line in (killed + rerun).splitlines()
        if line.startswith("step ")
    ]
    assert steps[:10] == list(range(1, 11)) and steps[-20:] == list(range(11, 31))  # rank 0 only; resumed at 10
    assert "rank 1 starts at step 10" in rerun
    assert sorted(path.name for path in checkpoints.iterdir()) == ["step_000000025.pt", "step_000000030.pt"]


def test_the_api_script_killed_mid_run_continues_from_its_checkpoint_in_one_run(api_reference, ray_cluster, tmp_path):
    from mlflow import MlflowClient

    job = compose_job(
        [
            "entrypoint=script",
            f"script.path={API_SCRIPT}",
            "tracking.log_model=false",
            "checkpoint.keep_last=3",
            f"checkpoint.dir={tmp_path / 'checkpoints'}",
            f"script.args=[--out,{tmp_path / 'weights.pt'},--kill-once,{tmp_path / 'killed'},--kill-at,12]",
        ],
        tmp_path,
    )
    out = io.StringIO()
    summary = run_job(job, Console(io.StringIO(), interactive=False, out=out))
    outcome = summary.outcome
    assert outcome.status == "FINISHED" and outcome.restarts == 1, outcome.error
    assert outcome.result.step == 30
    assert _same(torch.load(tmp_path / "weights.pt"), api_reference)
    assert "[rank 1] rank 1 starts at step 10 (restart 1)" in out.getvalue()
    client = MlflowClient(job.tracking.uri)
    history = client.get_metric_history(summary.run_id, "train/loss")
    steps = sorted({metric.step for metric in history})
    assert steps == list(range(1, 31))  # no gap, and the restart continued at 11, not at 1
    assert len([metric for metric in history if metric.step <= 10]) == 10
    [restart] = client.get_metric_history(summary.run_id, "restarts")
    assert restart.step == 10
    assert sorted(path.name for path in (tmp_path / "checkpoints" / summary.run_id).iterdir()) == [
        LOCK_NAME,
        "step_000000020.pt",
        "step_000000025.pt",
        "step_000000030.pt",
    ]
    assert_no_job_resources()


def test_console_ranks_filters_the_console_and_log_dir_keeps_every_ranks_output_per_attempt(ray_cluster, tmp_path):
    marker, logs = tmp_path / "killed-once", tmp_path / "rank-logs"
    job = compose_job(
        [
            "entrypoint=script",
            f"script.path={CONTRACT_SCRIPT}",
            "scaling.num_workers=2",
            "tracking.log_model=false",
            f"script.args=[--kill-once,{marker}]",
            "script.console_ranks=[1]",
            f"script.log_dir={logs}",
        ],
        tmp_path,
    )
    err, out = io.StringIO(), io.StringIO()
    summary = run_job(job, Console(err, interactive=False, out=out))
    assert summary.outcome.status == "FINISHED" and summary.outcome.restarts == 1, summary.outcome.error
    assert "[rank 1] done" in out.getvalue() and "[rank 0]" not in out.getvalue() + err.getvalue()
    [run_folder] = logs.iterdir()
    files = sorted(str(path.relative_to(run_folder)) for path in run_folder.rglob("*.log"))
    assert files == [f"attempt_{n}/rank_{r}/{s}.log" for n in (0, 1) for r in (0, 1) for s in ("stderr", "stdout")]
    final = (run_folder / "attempt_1" / "rank_0" / "stdout.log").read_text()
    assert final.startswith("contract {") and final.endswith("done\n")
    # the file keeps the progress bar's carriage returns as the script wrote them
    assert (run_folder / "attempt_1" / "rank_0" / "stderr.log").read_bytes().count(b"\r") == 11
    assert_no_job_resources()


# each rank says, per attempt, whether torch was imported before its first line and which worker started it;
# the first attempt waits to be interrupted, a restart ends at once
STARTED_AHEAD_SCRIPT = """
import json, os, sys, time
preloaded = "torch" in sys.modules
import torch
attempt, rank = os.environ["TORCHELASTIC_RESTART_COUNT"], os.environ["RANK"]
# written under another name first: the test reads the file as soon as it has its name
name = os.path.join(sys.argv[1], f"attempt{attempt}-rank{rank}.json")
with open(os.path.join(sys.argv[1], f".writing-{attempt}-{rank}"), "w") as file:
    json.dump({"preloaded": preloaded, "worker": os.getppid()}, file)
os.replace(file.name, name)
if attempt == "0":
    time.sleep(120)
"""


def test_after_a_lost_worker_the_spare_and_the_survivor_run_the_restart_in_processes_started_ahead(
    ray_cluster, tmp_path
):
    import threading

    script, seen = tmp_path / "train.py", tmp_path / "seen"
    script.write_text(STARTED_AHEAD_SCRIPT)
    seen.mkdir()
    job = compose_job(
        [
            "entrypoint=script",
            f"script.path={script}",
            f"script.args=[{seen}]",
            "scaling.num_workers=2",
            "failure.spare_workers=1",
            "failure.max_restarts=1",
            "tracking.log_model=false",
            "monitor.enabled=false",
        ],
        tmp_path,
    )
    summaries = []
    runner = threading.Thread(target=lambda: summaries.append(run_job(job, Console(io.StringIO(), False))))
    runner.start()
    try:
        wait_until(lambda: len(list(seen.glob("attempt0-*"))) == 2, 120, "both ranks' first attempt")
        first = [json.loads((seen / f"attempt0-rank{rank}.json").read_text()) for rank in range(2)]
        psutil.Process(first[0]["worker"]).kill()  # rank 0's worker is lost, with its script
    finally:
        runner.join(timeout=240)
    [summary] = summaries
    assert summary.outcome.status == "FINISHED" and summary.outcome.restarts == 1, summary.outcome.error
    second = [json.loads((seen / f"attempt1-rank{rank}.json").read_text()) for rank in range(2)]
    assert [rank["preloaded"] for rank in first] == [False, False]  # a job's first attempt starts them cold
    # the survivor started its next process when its script was stopped; the spare when it was started
    assert {rank["worker"] for rank in second} == {first[1]["worker"], *{s.pid for s in summary.outcome.workers}}
    assert first[0]["worker"] not in {rank["worker"] for rank in second}
    assert [rank["preloaded"] for rank in second] == [True, True]
    assert_no_job_resources()
