"""The script API on its own: standalone (torchrun or one process) and through the worker's pipe."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import orchestrator
from orchestrator import api
from orchestrator.lifecycle.rank_reports import CheckpointReport, MetricsReport
from orchestrator.worker.script import read_report

MANAGED = (api.REPORT_FD_VARIABLE, api.RESUME_FROM_VARIABLE, api.RUN_ID_VARIABLE)


@pytest.fixture
def standalone(tmp_path, monkeypatch):
    """One process outside the orchestrator, with its working directory in tmp."""
    for variable in (
        *MANAGED,
        api.CHECKPOINT_DIR_VARIABLE,
        api.KEEP_LAST_VARIABLE,
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "TORCHELASTIC_RESTART_COUNT",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_importing_the_package_imports_nothing_heavy():
    code = "import sys, orchestrator; print(sorted(m for m in ('torch', 'ray', 'mlflow', 'hydra') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_standalone_report_prints_on_rank_0_only(standalone, capsys, monkeypatch):
    orchestrator.report({"loss": torch.tensor(0.25), "accuracy": 1}, 7)
    assert capsys.readouterr().out == "step 7: loss=0.25 accuracy=1\n"
    monkeypatch.setenv("RANK", "1")
    orchestrator.report({"loss": 0.5}, 8)
    assert capsys.readouterr().out == ""


def test_standalone_checkpoints_go_to_dot_checkpoints_keep_the_newest_two_and_load_the_newest(standalone):
    assert orchestrator.load_checkpoint() is None
    for step in (10, 20, 30):
        path = orchestrator.save_checkpoint({"w": torch.full((2,), float(step)), "step": step}, step)
        assert path == standalone / "checkpoints" / f"step_{step:09d}.pt"
    assert sorted(p.name for p in (standalone / "checkpoints").iterdir()) == ["step_000000020.pt", "step_000000030.pt"]
    loaded = orchestrator.load_checkpoint()
    assert loaded["step"] == 30 and torch.equal(loaded["w"], torch.full((2,), 30.0))


def test_the_checkpoint_folder_and_ranks_come_from_the_environment(standalone, monkeypatch, tmp_path):
    monkeypatch.setenv(api.CHECKPOINT_DIR_VARIABLE, str(tmp_path / "mine"))
    monkeypatch.setenv(api.KEEP_LAST_VARIABLE, "1")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    where = orchestrator.context()
    assert (where.world_rank, where.world_size, where.restart_count, where.managed) == (0, 1, 2, False)
    orchestrator.save_checkpoint({"step": 1}, 1)
    orchestrator.save_checkpoint({"step": 2}, 2)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["step_000000002.pt"]
    monkeypatch.setenv("RANK", "1")  # rank 1 writes nothing: rank 0's write is the checkpoint
    assert orchestrator.save_checkpoint({"step": 3}, 3) == tmp_path / "mine" / "step_000000003.pt"
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["step_000000002.pt"]


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: orchestrator.report({"loss": "high"}, 1),
            "metric 'loss' must be a number or a one-element tensor, got str",
        ),
        (lambda: orchestrator.report({"loss": torch.ones(3)}, 1), "metric 'loss' must be a number"),
        (lambda: orchestrator.report([1.0], 1), "metrics must be a dict of name -> number, got list"),
        (lambda: orchestrator.report({"loss": 1.0}, -1), "step must be an int >= 0 (the global step), got -1"),
        (lambda: orchestrator.save_checkpoint({}, 1.5), "save_checkpoint: step must be an int >= 0"),
        (lambda: orchestrator.save_checkpoint([1], 1), "state must be a dict, got list"),
    ],
)
def test_bad_calls_name_the_bad_value(standalone, call, message):
    with pytest.raises((ValueError, TypeError)) as raised:
        call()
    assert message in str(raised.value)


def _managed(monkeypatch, tmp_path, descriptor: int) -> None:
    monkeypatch.setenv(api.REPORT_FD_VARIABLE, str(descriptor))
    monkeypatch.setenv(api.CHECKPOINT_DIR_VARIABLE, str(tmp_path / "run"))
    monkeypatch.setenv(api.RUN_ID_VARIABLE, "abc")


def test_under_the_orchestrator_reports_and_checkpoints_go_through_the_pipe(standalone, monkeypatch, tmp_path, capsys):
    read, write = os.pipe()
    try:
        _managed(monkeypatch, tmp_path, write)
        assert orchestrator.context().managed and orchestrator.context().run_id == "abc"
        orchestrator.report({"train/loss": 0.5}, 3)
        path = orchestrator.save_checkpoint({"step": 4}, 4)
        lines = os.read(read, 65536).decode().splitlines()
    finally:
        api._channel.cache_clear()
        os.close(read)
        os.close(write)
    assert capsys.readouterr().out == ""  # nothing printed: it goes to the run
    assert [read_report(line) for line in lines] == [
        MetricsReport(step=3, metrics={"train/loss": 0.5}),
        CheckpointReport(step=4, path=str(path)),
    ]
    assert path.parent == tmp_path / "run" and path.is_file()


def test_a_full_pipe_never_blocks_the_script_and_loses_nothing(standalone, monkeypatch, tmp_path):
    read, write = os.pipe()
    try:
        _managed(monkeypatch, tmp_path, write)
        # nobody drains the pipe: a blocking write would hang here once its 64 KiB are full
        for step in range(5000):
            orchestrator.report({"train/loss": float(step), "eval/accuracy": 0.5}, step)
        channel = api._channel(str(write))
        assert channel.pending  # what did not fit waits in memory
        received = bytearray()
        while channel.pending or not received.endswith(b"\n"):
            received += os.read(read, 1 << 20)
            channel._write()
        os.set_blocking(read, False)
        try:
            received += os.read(read, 1 << 20)
        except BlockingIOError:
            pass
    finally:
        api._channel.cache_clear()
        os.close(read)
        os.close(write)
    steps = [read_report(line).step for line in received.decode().splitlines()]
    assert steps == list(range(5000))


def test_under_the_orchestrator_load_checkpoint_is_the_attempts_resume_point(standalone, monkeypatch, tmp_path):
    read, write = os.pipe()
    try:
        _managed(monkeypatch, tmp_path, write)
        orchestrator.save_checkpoint({"step": 5}, 5)
        assert orchestrator.load_checkpoint() is None  # a fresh attempt: no resume point, whatever is on disk
        monkeypatch.setenv(api.RESUME_FROM_VARIABLE, str(tmp_path / "run" / "step_000000005.pt"))
        assert orchestrator.load_checkpoint() == {"step": 5}
    finally:
        api._channel.cache_clear()
        os.close(read)
        os.close(write)
