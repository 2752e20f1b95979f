"""Which checkpoint `trainer.resume` means, and which MLflow run it continues.

Checkpoints live in `<checkpoint.dir>/<run id>/step_<N>.pt`, so a checkpoint names its run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from orchestrator.errors import ConfigError
from orchestrator.train.checkpoint import checkpoint_step, is_checkpoint, latest_checkpoint, list_checkpoints

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class ResumeTarget:
    """The checkpoint to load, its global step, and the MLflow run it belongs to (if it names one)."""

    checkpoint: Path
    step: int
    run_id: Optional[str]


def resolve_resume(resume: str, checkpoint_root: Path) -> ResumeTarget:
    """latest | a checkpoint (step_<N>/ or step_<N>.pt) | a run's checkpoint directory | an MLflow run id ->
    ResumeTarget."""
    candidate = Path(resume).expanduser()
    if resume == "latest":
        checkpoint = _newest_anywhere(checkpoint_root)
    elif is_checkpoint(candidate):
        checkpoint = candidate.resolve()
    elif candidate.is_dir():
        checkpoint = latest_checkpoint(candidate.resolve())
    elif _RUN_ID.match(resume):
        checkpoint = latest_checkpoint(checkpoint_root / resume)
    else:
        checkpoint = None
    if checkpoint is None:
        raise ConfigError(
            [
                f"trainer.resume={resume} is not valid: found no complete checkpoint for it under "
                f"checkpoint.dir={checkpoint_root}; use latest, a checkpoint (step_<N>), a run's checkpoint "
                f"directory or an MLflow run id"
            ]
        )
    run_id = checkpoint.parent.name if _RUN_ID.match(checkpoint.parent.name) else None
    return ResumeTarget(checkpoint=checkpoint, step=checkpoint_step(checkpoint), run_id=run_id)


def _newest_anywhere(root: Path) -> Optional[Path]:
    """The most recently written complete checkpoint of any run under `root`."""
    if not root.is_dir():
        return None
    found = [path for run_dir in root.iterdir() if run_dir.is_dir() for path in list_checkpoints(run_dir)]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


NOT_IDENTITY = frozenset({"data.num_workers"})
"""model/data keys that do not change what a checkpoint holds or which samples come next."""


def model_data_identity(params: Mapping[str, str]) -> dict[str, str]:
    """The flat params that decide whether a checkpoint fits a job: every model.* and data.* key."""
    return {
        key: value for key, value in params.items() if key.startswith(("model.", "data.")) and key not in NOT_IDENTITY
    }


def identity_problems(resume: str, saved: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Why the checkpoint's model or data config does not fit the job's, key by key (empty when it fits)."""
    differing = sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))
    if not differing:
        return []
    changes = "; ".join(
        f"{key}: {saved.get(key, '(none)')} in the checkpoint, {current.get(key, '(none)')} now" for key in differing
    )
    return [
        f"trainer.resume={resume} is not valid: its checkpoint was trained with a different model or data "
        f"config ({changes}); resume with the checkpoint's model and data keys, or start a new run without "
        f"trainer.resume"
    ]


def extends_finished_run(
    max_steps: Optional[int], max_epochs: int, checkpoint_step: int, logged: Mapping[str, str]
) -> bool:
    """Whether the job asks for more training than the finished run did: a trainer.max_steps beyond the
    checkpoint's step, or (training by epochs) a trainer.max_epochs above the run's."""
    if max_steps is not None:
        return max_steps > checkpoint_step
    logged_epochs = logged.get("trainer.max_epochs")
    return (
        logged.get("trainer.max_steps") in (None, "null")
        and logged_epochs is not None
        and logged_epochs.isdigit()
        and max_epochs > int(logged_epochs)
    )


def finished_run_problem(resume: str, run_id: str, checkpoint_step: int) -> str:
    """The message that refuses to resume a FINISHED run without an extension."""
    return (
        f"trainer.resume={resume} is not valid: MLflow run {run_id} FINISHED at step {checkpoint_step}, and a "
        f"finished run is never changed by a later command; to train it further, extend it explicitly with "
        f"trainer.max_steps=<more than {checkpoint_step}> (or a larger trainer.max_epochs), or start a new run "
        f"from its checkpoint with tracking.run_name=... and trainer.resume=<the checkpoint file> after copying "
        f"it out of the run's folder"
    )
