"""The API of a torchrun-style script: report metrics, save and load checkpoints, know where it runs.

    import orchestrator
    state = orchestrator.load_checkpoint()          # None on a fresh start
    ...
    orchestrator.report({"loss": loss.item()}, step)
    orchestrator.save_checkpoint({"model": model.state_dict(), "step": step}, step)

Under the orchestrator (entrypoint=script) the worker that runs the script hands it a pipe
(ORCHESTRATOR_REPORT_FD) and the run's checkpoint folder; reports and completed checkpoints travel
through the pipe to the worker, which sends them to the driver like the built-in loop's. Anywhere
else (plain torchrun, `python script.py`) the same calls work on their own: `report` prints a line on
rank 0 and checkpoints go to `$ORCHESTRATOR_CHECKPOINT_DIR`, else `./checkpoints`. Write once, run
under either.

Importing this module imports nothing heavy; torch is imported only to write or read a checkpoint.
"""

from __future__ import annotations

import atexit
import functools
import json
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

REPORT_FD_VARIABLE = "ORCHESTRATOR_REPORT_FD"
"""Set by the worker: the file descriptor of the pipe the script's reports go to (absent outside the orchestrator)."""
CHECKPOINT_DIR_VARIABLE = "ORCHESTRATOR_CHECKPOINT_DIR"
"""The folder checkpoints go to: the run's folder under the orchestrator; the user's choice under torchrun."""
RESUME_FROM_VARIABLE = "ORCHESTRATOR_RESUME_FROM"
"""Set by the worker when the attempt continues from a checkpoint (after a restart, or trainer.resume)."""
RUN_ID_VARIABLE = "ORCHESTRATOR_RUN_ID"
"""Set by the worker: the MLflow run the script's reports are recorded in."""
KEEP_LAST_VARIABLE = "ORCHESTRATOR_KEEP_LAST"
"""Complete checkpoints kept (checkpoint.keep_last under the orchestrator)."""
DEFAULT_CHECKPOINT_DIR = "checkpoints"
DEFAULT_KEEP_LAST = 2


@dataclass(frozen=True)
class Context:
    """Where this process runs: its ranks, its run, its checkpoint folder, and how often the job restarted."""

    world_rank: int
    local_rank: int
    world_size: int
    run_id: Optional[str]
    """The MLflow run the reports go to; None outside the orchestrator."""
    checkpoint_dir: Path
    restart_count: int
    """Restarts of the job before this attempt (torchrun's TORCHELASTIC_RESTART_COUNT)."""
    managed: bool
    """True when the orchestrator runs this script (reports reach MLflow), False under torchrun or alone."""


def context() -> Context:
    """This process's place in the job, read from the environment the launcher gave it (torchrun's or ours)."""
    env = os.environ
    return Context(
        world_rank=int(env.get("RANK", "0")),
        local_rank=int(env.get("LOCAL_RANK", "0")),
        world_size=int(env.get("WORLD_SIZE", "1")),
        run_id=env.get(RUN_ID_VARIABLE) or None,
        checkpoint_dir=Path(env.get(CHECKPOINT_DIR_VARIABLE) or DEFAULT_CHECKPOINT_DIR).absolute(),
        restart_count=int(env.get("TORCHELASTIC_RESTART_COUNT", "0")),
        managed=bool(env.get(REPORT_FD_VARIABLE)),
    )


def report(metrics: Mapping[str, Any], step: int) -> None:
    """Record scalar metrics at global step `step`; rank 0's reports are the run's (reduce them first).

    Never waits on the driver or MLflow: under the orchestrator the report is one write to a local pipe
    that the worker drains (a full pipe keeps it in memory until the next call or the script's exit).
    Values are numbers or one-element tensors. Other ranks' calls return at once.
    """
    _check_step(step, "report")
    values = _scalars(metrics)
    if os.environ.get("RANK", "0") != "0":  # read directly: this runs every step, context() builds a Path
        return
    descriptor = os.environ.get(REPORT_FD_VARIABLE)
    if descriptor:
        _channel(descriptor).send({"step": step, "metrics": values})
    else:
        shown = " ".join(f"{key}={value:.6g}" for key, value in values.items())
        print(f"step {step}: {shown}", flush=True)


def save_checkpoint(state: Mapping[str, Any], step: int) -> Path:
    """Save `state` as the checkpoint of `step`; call it on every rank, rank 0 writes it once.

    The write is atomic (a temporary name, fsync, rename, then the folder fsynced), so a crash never
    leaves a half-written checkpoint that `load_checkpoint` would pick; only the newest
    checkpoint.keep_last are kept. Returns the checkpoint's path (where rank 0 put it).
    """
    _check_step(step, "save_checkpoint")
    if not isinstance(state, Mapping):
        raise TypeError(f"orchestrator.save_checkpoint: state must be a dict, got {type(state).__name__}")
    from orchestrator.train.checkpoint import checkpoint_path
    from orchestrator.train.checkpoint import save_checkpoint as write

    where = context()
    if where.world_rank != 0:
        return checkpoint_path(where.checkpoint_dir, step)
    keep_last = int(os.environ.get(KEEP_LAST_VARIABLE, DEFAULT_KEEP_LAST))
    path = write(state, where.checkpoint_dir, step, keep_last)
    if where.managed:
        _channel(os.environ[REPORT_FD_VARIABLE]).send({"step": step, "checkpoint": str(path)})
    return path


def load_checkpoint() -> Optional[dict]:
    """The newest complete checkpoint of this run (on the CPU), or None on a fresh start.

    Under the orchestrator: the checkpoint the attempt continues from (after a restart, or with
    trainer.resume), the same file on every rank. Elsewhere: the newest in the checkpoint folder.
    """
    from orchestrator.train.checkpoint import latest_checkpoint
    from orchestrator.train.checkpoint import load_checkpoint as read

    where = context()
    if where.managed:
        chosen = os.environ.get(RESUME_FROM_VARIABLE)
        path = Path(chosen) if chosen else None
    else:
        path = latest_checkpoint(where.checkpoint_dir)
    return read(path) if path is not None else None


def _check_step(step: Any, caller: str) -> None:
    if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
        raise ValueError(f"orchestrator.{caller}: step must be an int >= 0 (the global step), got {step!r}")


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    if not isinstance(metrics, Mapping):
        raise TypeError(f"orchestrator.report: metrics must be a dict of name -> number, got {type(metrics).__name__}")
    values = {}
    for key, value in metrics.items():
        try:
            values[str(key)] = float(value)
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of more than one element
            raise ValueError(
                f"orchestrator.report: metric {key!r} must be a number or a one-element tensor, "
                f"got {type(value).__name__}"
            ) from None
    return values


class _Channel:
    """The write end of the worker's report pipe: one JSON line per message, never blocking.

    The pipe is non-blocking: when it is full (the worker is slow to drain it), what did not fit waits
    in memory and goes first at the next send; at exit whatever is left is written, waiting if need be.
    """

    def __init__(self, descriptor: int):
        self.descriptor = descriptor
        self.pending = bytearray()
        self.broken = False
        os.set_blocking(descriptor, False)
        atexit.register(self.close)

    def send(self, message: dict) -> None:
        if self.broken:
            return
        self.pending += (json.dumps(message, allow_nan=True) + "\n").encode()
        self._write()

    def _write(self) -> None:
        try:
            while self.pending:
                written = os.write(self.descriptor, self.pending)
                del self.pending[:written]
        except BlockingIOError:
            pass  # the rest goes with the next message
        except BrokenPipeError:  # the worker is gone (this process is about to be killed with it)
            self.broken = True
            self.pending.clear()

    def close(self) -> None:
        """Write what is left, waiting for the worker to drain the pipe if need be."""
        if self.pending and not self.broken:
            os.set_blocking(self.descriptor, True)
            self._write()


@functools.lru_cache(maxsize=None)
def _channel(descriptor: str) -> _Channel:
    # one channel per process and pipe: the pipe is the process's, handed over by the worker at start
    return _Channel(int(descriptor))
