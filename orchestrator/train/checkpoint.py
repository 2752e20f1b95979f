"""The one place checkpoints are written and found.

A checkpoint is complete only once its atomic rename has happened: it is written to a hidden
temporary name, flushed and fsynced, then renamed to `step_<N>.pt`, and the directory is fsynced.
A crash mid-write leaves only a temporary file, which `latest_checkpoint` never picks.
"""

from __future__ import annotations

import copy
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

# torch is imported where tensors are written or read, not here: the driver finds and names checkpoints
# (resume, restarts) through this module, and importing torch would cost its start 2 s of one core

_NAME = re.compile(r"^step_(\d{9})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    """Where the checkpoint of global step `step` lives."""
    return directory / f"step_{step:09d}.pt"


def save_checkpoint(state: Mapping[str, Any], directory: Path, step: int, keep_last: int) -> Path:
    """Atomically write `state` as the checkpoint of `step`, then keep only the newest `keep_last`."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    remove_temporaries(directory)
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


def remove_temporaries(directory: Path) -> None:
    """Delete half-written files left by a writer that died mid-write (only rank 0 writes here)."""
    for path in directory.glob(".step_*.tmp"):
        path.unlink(missing_ok=True)


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint file holds, from its name."""
    matched = _NAME.match(path.name)
    if matched is None:
        raise ValueError(f"{path} is not a checkpoint file (step_<N>.pt)")
    return int(matched.group(1))


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
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def saved_config(path: Path) -> Optional[dict[str, str]]:
    """The model and data config a checkpoint of the built-in loop was trained with (None for a script's own,
    or one written before checkpoints carried it). Memory-mapped: the tensors are not read."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    config = state.get("config") if isinstance(state, dict) else None
    return dict(config) if isinstance(config, dict) else None


def snapshot(value: Any) -> Any:
    """A copy of `value` whose tensors are detached CPU copies: safe to write while training goes on."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: snapshot(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(item) for item in value)
    return copy.deepcopy(value)


class CheckpointWriter:
    """Writes checkpoints on a background thread: rank 0 pays only for the in-memory copy.

    One write at a time: a new checkpoint first waits for the previous write, and `close()` waits for
    the last one, so the training loop never outruns the disk by more than one checkpoint.
    """

    def __init__(self, directory: Path, keep_last: int, on_complete: Callable[[int, Path], None]):
        self.directory = directory
        self.keep_last = keep_last
        self.on_complete = on_complete
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None

    def submit(self, state: Mapping[str, Any], step: int) -> None:
        """Write `state` (already a snapshot) as the checkpoint of `step`, in the background."""
        self.wait()
        self._thread = threading.Thread(
            target=self._write, args=(state, step), daemon=True, name="orchestrator-checkpoint-writer"
        )
        self._thread.start()

    def _write(self, state: Mapping[str, Any], step: int) -> None:
        try:
            path = save_checkpoint(state, self.directory, step, self.keep_last)
            self.on_complete(step, path)
        except BaseException as error:  # surfaced to the training loop by wait()
            self._error = error

    def wait(self) -> None:
        """Block until the write in flight (if any) is complete; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    close = wait
