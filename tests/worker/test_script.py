"""The script runner on its own (no Ray): the environment a script gets, and what its output and exit become."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from orchestrator.lifecycle.rank_reports import ErrorReport, LogReport, ResultReport
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.worker.script import (
    TEARDOWN_ABORT,
    ScriptAttempt,
    exit_text,
    known_cause,
    run_script,
    script_environment,
)
from orchestrator.worker.stop import StopSignal
from tests.helpers import compose_job, worker_spec

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "contract_script.py"
RAYS_DEBUGGER = "ray.util.rpdb.set_trace"


def _spec(**env: str) -> WorkerSpec:
    return worker_spec(env={"RANK": "0", "WORLD_SIZE": "1", "TORCHELASTIC_RESTART_COUNT": "0", **env})


def test_the_scripts_environment_drops_rays_debugger_and_sets_nccl_error_handling_unless_the_user_did(tmp_path):
    job = compose_job([], tmp_path)
    env = script_environment(_spec(), job, environ={"PATH": "/bin", "PYTHONBREAKPOINT": RAYS_DEBUGGER})
    assert "PYTHONBREAKPOINT" not in env and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    assert env["PATH"] == "/bin" and env["RANK"] == "0" and env["TORCHELASTIC_RESTART_COUNT"] == "0"
    # the user's own values: PYTHONBREAKPOINT from cluster.runtime_env (Ray overwrote it in the worker),
    # TORCH_NCCL_ASYNC_ERROR_HANDLING from the worker's environment (runtime_env) or scaling.nccl_env
    job = compose_job(["+cluster.runtime_env.env_vars={PYTHONBREAKPOINT:pdb.set_trace}"], tmp_path)
    env = script_environment(
        _spec(), job, environ={"PYTHONBREAKPOINT": RAYS_DEBUGGER, "TORCH_NCCL_ASYNC_ERROR_HANDLING": "3"}
    )
    assert env["PYTHONBREAKPOINT"] == "pdb.set_trace" and env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3"
    env = script_environment(_spec(TORCH_NCCL_ASYNC_ERROR_HANDLING="0"), job, environ={})
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "0"


def _run(tmp_path, overrides) -> tuple[object, list]:
    job = compose_job(["entrypoint=script", f"script.path={SCRIPT}", *overrides], tmp_path)
    reports: list = []
    return run_script(_spec(), job, reports.append, StopSignal(), ScriptAttempt(str(tmp_path / "ckpt"))), reports


def test_the_script_gets_script_argv_verbatim_and_a_redrawn_line_arrives_marked_as_such(tmp_path):
    result, reports = _run(tmp_path, ["script.argv=\"--lr 1e-3 --total-timesteps=16384 --flag null --name 'a b'\""])
    assert isinstance(result, ResultReport)
    [contract] = [r.line for r in reports if r.line.startswith("contract ")]
    assert json.loads(contract.removeprefix("contract "))["argv"] == [
        "--lr",
        "1e-3",
        "--total-timesteps=16384",
        "--flag",
        "null",
        "--name",
        "a b",
    ]
    progress = [(r.line, r.redrawn) for r in reports if r.stream == "stderr"]
    assert progress == [(f"progress {percent:3d}%", percent < 100) for percent in range(0, 101, 10)]
    assert all(isinstance(r, LogReport) for r in reports)


def test_a_failed_script_reports_how_it_ended_with_its_stderr_tail_holding_a_progress_bars_last_drawing(tmp_path):
    result, _ = _run(tmp_path, ["script.args=[--usage-error]"])
    assert isinstance(result, ErrorReport) and result.exit_code == 2
    assert result.message == "contract_script.py exited with code 2"
    assert result.traceback.startswith("progress 100%\nusage: contract_script.py")
    assert exit_text(-signal.SIGKILL) == "was killed by SIGKILL (signal 9)"


def test_an_abort_as_the_interpreter_exits_is_named_with_what_to_do(tmp_path):
    # what a rank shows when a torch thread meets the interpreter's teardown (pytorch/pytorch#190489)
    script = tmp_path / "ends_badly.py"
    script.write_text(
        "import atexit, os, sys\n"
        "print('trained', flush=True)\n"
        f"atexit.register(lambda: (print({TEARDOWN_ABORT!r}, file=sys.stderr, flush=True), os.abort()))\n"
    )
    job = compose_job(["entrypoint=script", f"script.path={script}"], tmp_path)
    result = run_script(_spec(), job, [].append, StopSignal(), ScriptAttempt(str(tmp_path / "ckpt")))
    assert isinstance(result, ErrorReport) and result.exit_code == -signal.SIGABRT
    assert result.message.startswith("ends_badly.py was killed by SIGABRT (signal 6) with 'terminate called")
    assert "pytorch/pytorch#190489" in result.message and "A rank that aborts as it exits" in result.message
    # any other abort, or another signal with that line, is told as it is
    assert known_cause(-signal.SIGABRT, ["Fatal Python error: Aborted\n"]) == ""
    assert known_cause(-signal.SIGKILL, [TEARDOWN_ABORT + "\n"]) == ""
