"""The one place checkpoints are written and found.

A checkpoint is complete only once its atomic rename has happened: it is written to a hidden
temporary name, flushed and fsynced, then renamed to `step_<N>.pt`, and the directory is fsynced.
A crash mid-write leaves only a temporary file, which `latest_checkpoint` never picks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

_NAME = re.compile(r"^step_(\d{9})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    """Where the checkpoint of global step `step` lives."""
    return directory / f"step_{step:09d}.pt"


def save_checkpoint(state: Mapping[str, Any], directory: Path, step: int, keep_last: int) -> Path:
    """Atomically write `state` as the checkpoint of `step`, then keep only the newest `keep_last`."""
    directory.mkdir(parents=True, exist_ok=True)
    final = checkpoint_path(directory, step)
    temporary = directory / f".{final.name}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as handle:
            torch.save(dict(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(directory)
    prune_checkpoints(directory, keep_last)
    return final


def _fsync_directory(directory: Path) -> None:
    # makes the rename itself durable: without it a power loss can forget the new name
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in directory.iterdir() if (m := _NAME.match(path.name))]
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: Path) -> Optional[Path]:
    """The newest complete checkpoint in `directory`, or None."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints."""
    for path in list_checkpoints(directory)[:-keep_last]:
        path.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint onto the CPU (the caller moves tensors where they belong)."""
    return torch.load(path, map_location="cpu", weights_only=False)
