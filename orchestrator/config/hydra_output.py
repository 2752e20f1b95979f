"""Hydra's output directory, written by us: only for an accepted config, and only redacted.

Hydra itself would write `.hydra/{config,hydra,overrides}.yaml` before the task function runs, so for
a config that is then rejected too, and verbatim, with every secret of the command line in it. The
shipped config turns that off (`hydra.output_subdir: null`); the driver writes the same three files
here once the config is valid, through the job's Redactor.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from orchestrator.redaction import Redactor

HYDRA_SUBDIR = ".hydra"
OUTPUT_SUBDIR_KEY = "hydra.output_subdir"


def write_hydra_files(
    output_dir: str | os.PathLike, task_cfg: Any, hydra_cfg: Any, overrides: Sequence[str], redactor: Redactor
) -> Path:
    """Write `<output_dir>/.hydra/` (config.yaml, hydra.yaml, overrides.yaml) with secrets masked; returns it.

    An output directory that already holds an earlier command's files (two commands started in the
    same second share Hydra's default `outputs/<date>/<time>`; a fixed `hydra.run.dir` is shared by
    every command) gets `.hydra.2/`, `.hydra.3/`, ...: no command's record overwrites another's.
    """
    from omegaconf import OmegaConf

    folder = new_hydra_folder(Path(output_dir))
    texts = {
        "config.yaml": OmegaConf.to_yaml(task_cfg),
        "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
        "overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(overrides))),
    }
    for name, text in texts.items():
        write_redacted(folder / name, text, redactor)
    return folder


def new_hydra_folder(output_dir: Path) -> Path:
    """Create and return the first of `.hydra`, `.hydra.2`, ... that does not exist yet (mkdir is the claim,
    so two commands racing for one name each get their own)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    number = 1
    while True:
        folder = output_dir / (HYDRA_SUBDIR if number == 1 else f"{HYDRA_SUBDIR}.{number}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1


def write_redacted(path: Path, text: str, redactor: Redactor) -> None:
    """Write `text` redacted to `path` atomically: a reader never sees a half-written or unredacted file."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(redactor.text(text))
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def remove_empty_dirs(folder: str | os.PathLike, stop_at: str | os.PathLike) -> None:
    """Remove `folder` and then its parents while they are empty, never `stop_at` or above it.

    What a rejected config leaves of Hydra's output directory is empty folders (Hydra creates the
    directory before the task runs); an empty folder holds nothing of the user's.
    """
    folder, stop_at = Path(folder).resolve(), Path(stop_at).resolve()
    while folder != stop_at and stop_at in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty (or gone): what is there is not ours to remove
            return
        folder = folder.parent


def sets_output_subdir(overrides: Sequence[str]) -> bool:
    """True when an override sets hydra.output_subdir (which would make Hydra write unredacted files)."""
    return any(override.split("=", 1)[0].lstrip("+~") == OUTPUT_SUBDIR_KEY for override in overrides)
