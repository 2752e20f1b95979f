"""A data set of image files on disk: scikit-learn's digits written once as PNGs, read back by a Dataset."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset


def write_pngs(root: Path) -> None:
    """Write the 1,797 digits as root/<label>/<index>.png (8-bit grey), once; a marker file says it is complete."""
    from PIL import Image
    from sklearn.datasets import load_digits

    done = root / ".complete"
    if done.exists():
        return
    digits = load_digits()
    for index, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (image * (255 / 16)).round().astype(np.uint8)
        # several ranks may write at once: each file appears whole under its name
        partial = folder / f".{index}.png.{os.getpid()}"
        Image.fromarray(pixels, mode="L").save(partial, format="PNG")
        os.replace(partial, folder / f"{index}.png")
    done.touch()


class PngDigits(Dataset):
    """(image 1 x 8 x 8 in [0, 1], label) read from the PNG files listed in `files`; with `as_dicts`, each item
    is {"image": ..., "label": ...} instead (train it with trainer.step_fn=digitpng.steps.classify)."""

    def __init__(self, files: list[Path], as_dicts: bool = False):
        self.files = files
        self.as_dicts = as_dicts

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        from PIL import Image

        path = self.files[index]
        with Image.open(path) as image:
            pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        image, label = pixels.unsqueeze(0), int(path.parent.name)
        return {"image": image, "label": label} if self.as_dicts else (image, label)


def build(root: str = "digit-pngs", eval_every: int = 5, as_dicts: bool = False):
    """(train, eval) over the PNGs under `root` (written first if missing); every `eval_every`-th file is eval."""
    folder = Path(root).resolve()
    write_pngs(folder)
    files = sorted(folder.glob("*/*.png"), key=lambda p: int(p.stem))
    evaluation = [f for i, f in enumerate(files) if i % eval_every == 0]
    train = [f for i, f in enumerate(files) if i % eval_every != 0]
    return PngDigits(train, as_dicts), PngDigits(evaluation, as_dicts)
