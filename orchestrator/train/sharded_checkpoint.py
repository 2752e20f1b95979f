"""The built-in loop's checkpoints: Distributed Checkpoint (DCP) folders that every rank writes its part of.

Model and optimizer state go through DCP with parameter names as keys (torch's `get_state_dict`), so a
checkpoint loads into any number of ranks and either strategy: DCP reshards FSDP's shards, and spreads
DDP's replicated tensors over the ranks so that each writes a share, none gathers onto rank 0. The rest
(step, data position, every rank's RNG, schedule, scaler) is one small `trainer.pt` that rank 0 writes.

Folder life: rank 0 creates `.step_<N>.tmp/` and writes `trainer.pt` and `orchestrator.json`; the ranks
write their shards; DCP's coordinator (rank 0) writes `.metadata` last, once every rank's write has
succeeded; rank 0 then renames the folder to `step_<N>/` and fsyncs the parent. A crash at any point
leaves a temporary that no resume picks, and that the next attempt's rank 0 deletes.

With checkpoint.async_save, DCP copies the state into CPU memory on the training thread and writes in
a background thread, over a gloo group of its own: the training loop's collectives never share a
group with the writer's, whose order across ranks the loop cannot know.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import Future
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.distributed as dist

from orchestrator.train.checkpoint import (
    META_FILE,
    TRAINER_STATE_FILE,
    checkpoint_path,
    fsync_directory,
    prune_checkpoints,
    remove_checkpoint,
    remove_temporaries,
)


def sharded_path(directory: Path, step: int) -> Path:
    """Where the sharded checkpoint of global step `step` lives (a folder)."""
    return checkpoint_path(directory, step).with_suffix("")


def temporary_path(directory: Path, step: int) -> Path:
    """The hidden folder a checkpoint is written into before its rename (the same name on every rank)."""
    return directory / f".{sharded_path(directory, step).name}.tmp"


class ShardedCheckpointer:
    """Writes this rank's part of each checkpoint; rank 0 also finishes it (rename, keep_last).

    One checkpoint at a time: a new one first waits for the previous, and `close()` for the last, so the
    loop never runs more than one checkpoint ahead of the disk. `on_complete` runs on rank 0 once a
    checkpoint is complete (on the writer thread when asynchronous), with its step, folder and the seconds
    from `save` until it was complete.
    """

    def __init__(
        self,
        directory: Path,
        keep_last: int,
        async_save: bool,
        world_rank: int,
        timeout_s: float,
        on_complete: Callable[[int, Path, float], None],
    ):
        self.directory = directory
        self.keep_last = keep_last
        self.async_save = async_save
        self.world_rank = world_rank
        self.on_complete = on_complete
        # a collective of every rank (each builds its checkpointer at the same point of the attempt)
        self.group = dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        if world_rank == 0:
            directory.mkdir(parents=True, exist_ok=True)
            remove_temporaries(directory)  # a dead attempt's: no write of this attempt has begun

    def save(self, step: int, model_and_optimizer: dict[str, Any], trainer_state: Optional[dict], meta: dict) -> None:
        """Save step `step` (call on every rank; `trainer_state` and `meta` are rank 0's). Asynchronously, this
        returns once the state is copied to CPU memory."""
        started = time.perf_counter()
        self.wait()
        temporary = temporary_path(self.directory, step)
        if self.world_rank == 0:
            remove_checkpoint(temporary)
            temporary.mkdir(parents=True)
            _write_small_files(temporary, trainer_state, meta)
        # DCP's writer makes the folder on every rank as it plans: a rank ahead of rank 0 would make it between
        # rank 0's clearing and its mkdir (FileExistsError, IsADirectoryError), or have it deleted under it
        dist.barrier(group=self.group)
        import torch.distributed.checkpoint as dcp

        if not self.async_save:
            dcp.save(model_and_optimizer, checkpoint_id=temporary, process_group=self.group)
            self._finish(step, temporary, started)
            return
        future = dcp.async_save(model_and_optimizer, checkpoint_id=temporary, process_group=self.group)
        if not isinstance(future, Future):  # only with a stager of our own, which is not passed
            raise TypeError(f"dcp.async_save returned {type(future).__name__}, not a Future")
        self._thread = threading.Thread(
            target=self._finish_when_written,
            args=(future, step, temporary, started),
            daemon=True,
            name="orchestrator-checkpoint-writer",
        )
        self._thread.start()

    def _finish_when_written(self, future: Future, step: int, temporary: Path, started: float) -> None:
        try:
            future.result()
            self._finish(step, temporary, started)
        except BaseException as error:  # surfaced to the training loop by wait()
            self._error = error

    def _finish(self, step: int, temporary: Path, started: float) -> None:
        if self.world_rank != 0:
            return
        # DCP wrote `.metadata` last, and only after every rank reported its shards written
        fsync_directory(temporary)
        final = sharded_path(self.directory, step)
        if final.exists():  # the same step saved again (a resumed attempt): replace it in one rename
            aside = self.directory / f".{final.name}.replaced.tmp"
            remove_checkpoint(aside)
            os.replace(final, aside)
            os.replace(temporary, final)
            remove_checkpoint(aside)
        else:
            os.replace(temporary, final)
        fsync_directory(self.directory)
        prune_checkpoints(self.directory, self.keep_last)
        self.on_complete(step, final, time.perf_counter() - started)

    def wait(self) -> None:
        """Block until the write in flight (if any) is complete; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self, quiet: bool = False) -> None:
        """Wait for the last write; with `quiet`, drop its error (the attempt already failed for a reason of
        its own, and a write that broke with it is only incomplete, never picked)."""
        try:
            self.wait()
        except Exception:
            if not quiet:
                raise


def _write_small_files(folder: Path, trainer_state: Optional[dict], meta: dict) -> None:
    with open(folder / TRAINER_STATE_FILE, "wb") as handle:
        torch.save(trainer_state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    with open(folder / META_FILE, "w") as handle:
        json.dump(meta, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


def model_and_optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The model's and optimizer's state keyed by parameter name: DTensor shards under FSDP, plain tensors
    under DDP. The tensors are the live ones; DCP copies them before training goes on."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(module, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def load_model_and_optimizer(path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a sharded checkpoint's model and optimizer into this rank's part of them (any world size)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = model_and_optimizer_state(module, optimizer)
    dcp.load(state, checkpoint_id=path)
    set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def read_trainer_state(path: Path) -> dict[str, Any]:
    """The loop's own state of a sharded checkpoint (step, data position, RNG, schedule, scaler)."""
    state = torch.load(path / TRAINER_STATE_FILE, map_location="cpu", weights_only=False)
    if not isinstance(state, dict):
        raise ValueError(f"{path / TRAINER_STATE_FILE} holds {type(state).__name__}, not the loop's state")
    return state
