"""One command at a time per run folder: the driver holds an advisory lock on its checkpoint folder.

Two commands writing into one folder (a second `trainer.resume=latest` while the first still runs)
would interleave their checkpoints, prune each other's and both record into one MLflow run. The lock
is `flock` on a hidden file in the folder: the kernel releases it when its holder dies, however it
dies, so a crashed driver never leaves a stale lock behind. The file itself stays (removing it would
let a waiter lock an unlinked file while a third command creates a new one).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from pathlib import Path
from typing import Iterator, Optional

from orchestrator.errors import OrchestratorError

LOCK_NAME = ".orchestrator.lock"


class FolderInUse(OrchestratorError):
    """Another command is training in this run folder; raised before any cluster resource is taken."""

    exit_code = 2


@contextlib.contextmanager
def holding(folder: Path, purpose: str, *, required: bool = True) -> Iterator[None]:
    """Hold the folder's lock for the block, or raise FolderInUse naming the command that holds it.

    `purpose` says what this command wants the folder for (it ends the error message's first clause).
    A folder this host cannot create (`required=False`: a new run's folder on a path only the workers'
    nodes have) is not locked: no other command on this host can reach it either.
    """
    import fcntl

    try:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        if required:
            raise
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUse(
                f"cannot {purpose}: {folder} is in use by another command"
                f"{_holder_text(descriptor)}; wait for it to end (or stop it with Ctrl-C), then run "
                f"this command again"
            ) from None
        _write_holder(descriptor)
        yield
    finally:
        os.close(descriptor)  # closing the descriptor releases the lock


def _write_holder(descriptor: int) -> None:
    # the program and its subcommand only: the rest of a command line can hold secrets (a tracking URI's password)
    words = [os.path.basename(sys.argv[0]), *(word for word in sys.argv[1:2] if word.isidentifier())]
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": " ".join(words),
    }
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(holder).encode(), 0)


def _holder_text(descriptor: int) -> str:
    holder = _read_holder(descriptor)
    if holder is None:
        return ""
    return f" (PID {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}: {holder.get('command')})"


def _read_holder(descriptor: int) -> Optional[dict]:
    try:
        text = os.pread(descriptor, 65536, 0).decode()
        found = json.loads(text) if text else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return found if isinstance(found, dict) else None
