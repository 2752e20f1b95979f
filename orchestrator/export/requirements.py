"""Whether the optional `export` extra is installed, and what to install when it is not."""

from __future__ import annotations

import importlib.util

from orchestrator.errors import OrchestratorError

ONNX_MODULES = ("onnx", "onnxruntime", "onnxscript")
"""torch.onnx.export(dynamo=True) needs onnx and onnxscript; the parity check runs in onnxruntime."""
INSTALL_HINT = "pip install 'orchestrator[export]'"


class ExportError(OrchestratorError):
    """The export cannot be made or did not pass its checks; the message says what to change."""

    exit_code = 1


class OutputExists(ExportError, ValueError):
    """The file the export would write exists: it is never overwritten."""

    exit_code = 2


class MissingExtra(ExportError, ValueError):
    """A module of the `export` extra is not installed."""

    exit_code = 2


def require_onnx_extra() -> None:
    """Raise MissingExtra naming the missing modules and the install command, unless all are importable."""
    missing = [module for module in ONNX_MODULES if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingExtra(
            f"--format onnx needs {', '.join(missing)}, which {'are' if len(missing) > 1 else 'is'} not installed: "
            f"{INSTALL_HINT}"
        )
