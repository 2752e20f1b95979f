"""Which checkpoint `trainer.resume` means, and which MLflow run it continues.

Checkpoints live in `<checkpoint.dir>/<run id>/step_<N>.pt`, so a checkpoint names its run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from orchestrator.errors import ConfigError
from orchestrator.train.checkpoint import checkpoint_step, latest_checkpoint, list_checkpoints

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class ResumeTarget:
    """The checkpoint to load, its global step, and the MLflow run it belongs to (if it names one)."""

    checkpoint: Path
    step: int
    run_id: Optional[str]


def resolve_resume(resume: str, checkpoint_root: Path) -> ResumeTarget:
    """latest | a checkpoint file | a run's checkpoint directory | an MLflow run id -> ResumeTarget."""
    candidate = Path(resume).expanduser()
    if resume == "latest":
        checkpoint = _newest_anywhere(checkpoint_root)
    elif candidate.is_file():
        checkpoint = candidate.resolve()
    elif candidate.is_dir():
        checkpoint = latest_checkpoint(candidate.resolve())
    elif _RUN_ID.match(resume):
        checkpoint = latest_checkpoint(checkpoint_root / resume)
    else:
        checkpoint = None
    if checkpoint is None:
        raise ConfigError([f"trainer.resume={resume} is not valid: found no complete checkpoint for it under "
                           f"checkpoint.dir={checkpoint_root}; use latest, a checkpoint file, a run's checkpoint "
                           f"directory or an MLflow run id"])
    run_id = checkpoint.parent.name if _RUN_ID.match(checkpoint.parent.name) else None
    return ResumeTarget(checkpoint=checkpoint, step=checkpoint_step(checkpoint), run_id=run_id)


def _newest_anywhere(root: Path) -> Optional[Path]:
    """The most recently written complete checkpoint of any run under `root`."""
    if not root.is_dir():
        return None
    found = [path for run_dir in root.iterdir() if run_dir.is_dir() for path in list_checkpoints(run_dir)]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)
