"""The user's own package for the tests: the example's package copied to a folder outside the repository."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"


def user_package(folder: Path) -> Path:
    """Copy examples/own_model/digitpng to `folder` (which then goes on sys.path) and return `folder`.

    The copy of an earlier test is forgotten, so `digitpng` is imported (and found) from this folder.
    """
    for name in [name for name in sys.modules if name == "digitpng" or name.startswith("digitpng.")]:
        del sys.modules[name]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(EXAMPLE / "digitpng", folder / "digitpng")
    return folder


def own_overrides(folder: Path, *more: str) -> list[str]:
    """A job of the user's model, PNG data set (written under `folder`) and loss, as inline overrides."""
    return [
        "model._target_=digitpng.nets.DigitNet",
        "+model.width=8",
        "+model.dropout=0.1",
        "data._target_=digitpng.data.build",
        f"+data.root={folder / 'pngs'}",
        "data.batch_size=16",
        "loss._target_=digitpng.losses.SmoothedCrossEntropy",
        "+loss.smoothing=0.05",
        *more,
    ]


def importable_package(folder: Path, monkeypatch, modules: dict[str, str]) -> Path:
    """user_package in `folder` plus the given extra modules (name -> source), on sys.path for this test."""
    user_package(folder)
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(folder))
    return folder
