"""The one place checkpoints are found, and where a script's single-file checkpoints are written.

Two forms share one folder and one numbering:
- `step_<N>/`, the built-in loop's: a Distributed Checkpoint folder that every rank wrote its shards into
  (see sharded_checkpoint.py), with DCP's `.metadata`, the loop's `trainer.pt` and `orchestrator.json`;
- `step_<N>.pt`, one file, what `orchestrator.save_checkpoint` writes for a script (and what the loop
  wrote before sharded checkpoints).

Either is complete only once its atomic rename has happened: it is written under a hidden temporary
name (`.step_<N>...tmp`), flushed and fsynced, then renamed, and the folder is fsynced. A crash
mid-write leaves only a temporary, which `latest_checkpoint` never picks.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

# torch is imported where tensors are written or read, not here: the driver finds and names checkpoints
# (resume, restarts) through this module, and importing torch would cost its start 2 s of one core

_NAME = re.compile(r"^step_(\d{9})(\.pt)?$")
META_FILE = "orchestrator.json"
"""In a sharded checkpoint folder: its step, world size and the model/data config, readable without torch."""
TRAINER_STATE_FILE = "trainer.pt"
"""In a sharded checkpoint folder: the loop's own state (step, data position, every rank's RNG, ...)."""
DCP_METADATA_FILE = ".metadata"
"""Distributed Checkpoint's index of every shard, written last by its coordinator."""


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


def fsync_directory(directory: Path) -> None:
    """Make renames and new names in `directory` durable."""
    _fsync_directory(directory)


def remove_temporaries(directory: Path) -> None:
    """Delete what writers that died mid-write left: `.step_*.tmp` files and folders. Only when no write of
    this run is in flight (one writer per checkpoint folder: the folder lock, then rank 0 at an attempt's start)."""
    for path in directory.glob(".step_*.tmp"):
        remove_checkpoint(path)


def remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint (or temporary) of either form."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def is_sharded(path: Path) -> bool:
    """Whether `path` is a sharded (folder) checkpoint rather than a single file."""
    return not path.name.endswith(".pt")


def checkpoint_step(path: Path) -> int:
    """The global step a checkpoint holds, from its name."""
    matched = _NAME.match(path.name)
    if matched is None:
        raise ValueError(f"{path} is not a checkpoint (step_<N>/ or step_<N>.pt)")
    return int(matched.group(1))


def is_checkpoint(path: Path) -> bool:
    """Whether `path` is a complete checkpoint: a `step_<N>.pt` file, or a `step_<N>` folder DCP finished."""
    matched = _NAME.match(path.name)
    if matched is None:
        return False
    return path.is_file() if matched.group(2) else (path / DCP_METADATA_FILE).is_file()


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in `directory`, oldest first (a step saved in both forms counts once, as its folder)."""
    if not directory.is_dir():
        return []
    found: dict[int, Path] = {}
    for path in directory.iterdir():
        if is_checkpoint(path):  # a folder without DCP's index is not finished (a copy under way, say)
            step = checkpoint_step(path)
            if step not in found or is_sharded(path):
                found[step] = path
    return [found[step] for step in sorted(found)]


def latest_checkpoint(directory: Path) -> Optional[Path]:
    """The newest complete checkpoint in `directory`, or None."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def prune_checkpoints(directory: Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` complete checkpoints."""
    for path in list_checkpoints(directory)[:-keep_last]:
        remove_checkpoint(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint whole onto the CPU, in this one process (the caller moves tensors where they belong).

    A sharded checkpoint comes back as one dict: "model" (the full weights, as the model's state_dict names
    them), "optimizer" (its state by parameter name) and the loop's own state (step, epoch, rng, ...).
    """
    import torch

    if is_sharded(path):
        return _load_sharded_whole(path)

    return torch.load(path, map_location="cpu", weights_only=False)


def _load_sharded_whole(path: Path) -> dict[str, Any]:
    import tempfile

    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    # DCP's own converter reassembles every shard without a process group; it writes a file, which goes to
    # a temporary folder of its own, never into the checkpoint
    with tempfile.TemporaryDirectory(prefix="orchestrator-checkpoint-") as scratch:
        whole = Path(scratch) / "whole.pt"
        dcp_to_torch_save(path, whole)
        state = torch.load(whole, map_location="cpu", weights_only=False)
    loop_state = torch.load(path / TRAINER_STATE_FILE, map_location="cpu", weights_only=False)
    return {**(loop_state or {}), **state}


def saved_config(path: Path) -> Optional[dict[str, str]]:
    """The model and data config a checkpoint of the built-in loop was trained with (None for a script's own,
    or one written before checkpoints carried it). A folder's comes from its JSON; a file is memory-mapped, so
    its tensors are not read."""
    if is_sharded(path):
        meta = read_meta(path)
        config = meta.get("config")
        return {str(key): str(value) for key, value in config.items()} if isinstance(config, dict) else None
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    config = state.get("config") if isinstance(state, dict) else None
    return dict(config) if isinstance(config, dict) else None


def read_meta(path: Path) -> dict[str, Any]:
    """A sharded checkpoint's `orchestrator.json` ({} when it has none)."""
    meta = path / META_FILE
    if not meta.is_file():
        return {}
    loaded = json.loads(meta.read_text())
    return loaded if isinstance(loaded, dict) else {}
