"""Write a model to ONNX (torch.onnx's dynamo exporter) or pt2 (torch.export), with a dynamic batch axis.

The exporters' own log lines and warnings (missing torchvision kernels, deprecations) are kept off the
console while they run; a failure becomes an ExportError naming the failing operator (failures.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

from orchestrator.export.failures import explain_export_failure
from orchestrator.export.requirements import ExportError

QUIET_LOGGERS = (
    "torch",
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch._dynamo",
    "torch.fx.experimental.symbolic_shapes",
)
"""torch sets levels on some of these itself, so each is quieted and restored on its own."""
BATCH_AXIS = "batch"


def export_onnx(model: Any, example: Any, path: Path, what: str) -> None:
    """Export `model` traced on `example` (a tensor whose first axis is the batch) to an ONNX file at `path`."""
    import torch

    batch = torch.export.Dim(BATCH_AXIS)
    with _quiet():
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        except Exception as error:
            raise ExportError(explain_export_failure(what, "torch.export", _message(error))) from error
        try:
            # the program traced above, so a tracing failure and a translation failure are told apart
            exported = torch.onnx.export(program, dynamo=True, verbose=False, optimize=True)
        except Exception as error:
            raise ExportError(explain_export_failure(what, "onnx", _message(error))) from error
    assert exported is not None  # dynamo=True returns the ONNXProgram
    exported.save(str(path))


def export_pt2(model: Any, example: Any, path: Path, what: str) -> None:
    """Export `model` with torch.export (dynamic batch axis) and save the program to `path` (.pt2)."""
    import torch

    with _quiet():
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim(BATCH_AXIS)},))
        except Exception as error:
            raise ExportError(explain_export_failure(what, "torch.export", _message(error))) from error
    torch.export.save(program, str(path))


def _message(error: BaseException) -> str:
    """The error's text with its causes' (the exporters wrap the real error one or two levels deep)."""
    parts, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporter logs and warnings off; the process environment as it was (the first export sets
    TORCHINDUCTOR_CACHE_DIR, which the job's and the tests' environment must not gain)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    environment = dict(os.environ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
            for key in set(os.environ) - set(environment):
                del os.environ[key]
            os.environ.update(environment)
