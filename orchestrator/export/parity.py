"""Parity between the eager model's outputs and an exported model's (pure: numpy arrays in, a verdict out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    """An output passes when every element has |actual - expected| <= abs + rel * |expected| (numpy.allclose's rule)."""

    abs: float
    rel: float

    def describe(self) -> str:
        """The rule in words, as printed above every check."""
        return f"|exported - eager| <= {self.abs:g} + {self.rel:g} * |eager|, element by element"


DEFAULT_TOLERANCE = Tolerance(abs=1e-4, rel=1e-3)
"""float32 models: operator fusion and other kernels in ONNX Runtime change results by ~1e-7 relative per
operation; a few layers stay far below 1e-3. A wrong weight, layout or operator moves outputs by far more."""


@dataclass(frozen=True)
class ParityResult:
    """How one input set's outputs compare: the largest absolute and relative errors and the verdict."""

    label: str
    rows: int
    max_abs: float
    max_rel: float
    ok: bool
    problem: str = ""
    """Why the outputs cannot be compared element by element (shapes differ), or ""."""

    def describe(self) -> str:
        """`eval batch (64 rows): max abs error 2.4e-07, max rel error 1.1e-06: ok`."""
        verdict = "ok" if self.ok else "DIFFERS"
        if self.problem:
            return f"{self.label} ({self.rows} rows): {self.problem}: {verdict}"
        return f"{self.label} ({self.rows} rows): max abs error {self.max_abs:.2e}, max rel error {self.max_rel:.2e}: {verdict}"


def compare_outputs(label: str, expected: Any, actual: Any, tolerance: Tolerance = DEFAULT_TOLERANCE) -> ParityResult:
    """Compare the exported model's outputs with the eager model's for one input set.

    The relative error divides by max(|eager|, tolerance.abs): elements smaller than the absolute
    tolerance are judged by it, so a logit of 1e-9 does not report a relative error of millions.
    A NaN or infinity where the eager model has a finite value is a difference.
    """
    want = np.asarray(expected, dtype=np.float64)
    got = np.asarray(actual, dtype=np.float64)
    rows = int(want.shape[0]) if want.ndim else 1
    if want.shape != got.shape:
        return ParityResult(
            label, rows, np.inf, np.inf, False, f"shapes differ: eager {want.shape}, exported {got.shape}"
        )
    if want.size == 0:
        return ParityResult(label, rows, 0.0, 0.0, True)
    difference = np.abs(got - want)
    # the same non-finite value on both sides (an -inf mask) is no difference
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    difference = np.where(same, 0.0, np.where(np.isfinite(difference), difference, np.inf))
    relative = difference / np.maximum(np.abs(np.where(np.isfinite(want), want, 0.0)), tolerance.abs)
    allowed = tolerance.abs + tolerance.rel * np.abs(np.where(np.isfinite(want), want, 0.0))
    ok = bool(np.all(difference <= allowed))
    return ParityResult(label, rows, float(difference.max()), float(relative.max()), ok)
