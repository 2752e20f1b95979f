"""Run a model on numpy inputs: eagerly in PyTorch, an ONNX file in ONNX Runtime (CPU), a pt2 program."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def eager_outputs(model: Any, inputs: np.ndarray) -> np.ndarray:
    """The model's outputs in PyTorch, without autograd (load_logged_model put it in eval mode)."""
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(np.array(inputs))).numpy()


class OnnxRunner:
    """An ONNX Runtime CPU session for one ONNX file with a single input."""

    def __init__(self, path: Path):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: ORT warns about unused initializers otherwise
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """The first output for `inputs`."""
        return np.asarray(self.session.run(None, {self.input_name: np.ascontiguousarray(inputs)})[0])


class Pt2Runner:
    """A saved torch.export program, loaded back as a module."""

    def __init__(self, path: Path):
        import torch

        self.module = torch.export.load(str(path)).module()

    def run(self, inputs: np.ndarray) -> np.ndarray:
        """The program's output for `inputs`."""
        import torch

        with torch.no_grad():
            return self.module(torch.from_numpy(np.array(inputs))).numpy()
