"""The run folder's lock: one command at a time, the holder named, released however its holder ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.train.folder_lock import LOCK_NAME, FolderInUse, holding

HOLD = (
    "import sys; from pathlib import Path; from orchestrator.train.folder_lock import holding\n"
    "with holding(Path(sys.argv[1]), 'train'):\n"
    "    print('held', flush=True); sys.stdin.read()\n"
)


@pytest.fixture
def held_elsewhere(tmp_path):
    """Another process holding the lock of tmp_path/run (stopped by this fixture): (folder, process)."""
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), "train", "password=hunter2"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield folder, holder
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=30)


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_command(held_elsewhere):
    folder, holder = held_elsewhere
    with pytest.raises(FolderInUse) as refused:
        with holding(folder, "resume from step_000000010.pt"):
            pytest.fail("the lock was taken twice")
    message = str(refused.value)
    assert message.startswith(f"cannot resume from step_000000010.pt: {folder} is in use by another command")
    assert f"PID {holder.pid} on " in message and message.endswith(
        ": -c); wait for it to end (or stop it with Ctrl-C), then run this command again"
    )  # no argument of it
    assert refused.value.exit_code == 2


def test_the_lock_is_free_again_when_its_holder_is_killed(held_elsewhere):
    folder, holder = held_elsewhere
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with holding(folder, "train"):
        written = json.loads((folder / LOCK_NAME).read_text())
    assert written["pid"] == os.getpid()


def test_the_lock_is_released_at_the_end_of_the_block_and_on_an_error(tmp_path):
    with pytest.raises(RuntimeError):
        with holding(tmp_path, "train"):
            raise RuntimeError("the job failed")
    with holding(tmp_path, "train"):
        pass
    assert [path.name for path in tmp_path.iterdir()] == [LOCK_NAME]


def test_a_folder_this_host_cannot_create_is_only_locked_when_required(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with holding(blocked / "run", "train", required=False):
        pass
    with pytest.raises(OSError):
        with holding(blocked / "run", "train"):
            pass
    assert not Path(blocked / "run").exists()
