"""A worker process's global state, captured before a trial and put back after it, so a reused worker is a fresh one.

A sweep hands a trial's rank processes to the next trial of the same shape (sweep.reuse_workers). Whatever
the trial changed process-wide must not reach the next one: environment variables, the working directory,
sys.path, the user's modules (imported from their code, not installed packages), torch's global settings
(threads, deterministic algorithms, TF32, matmul precision, default dtype, autograd modes), every random
generator, and compiled-code caches. What a trial cannot change for the next (installed packages, the
interpreter) is left loaded: that is the time reuse saves.
"""

from __future__ import annotations

import importlib
import os
import random
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

# where installed code lives: a module from anywhere else is the user's (their package, a working_dir Ray
# unpacked, a script's folder) and is imported anew by the next trial
_INSTALLED = tuple(
    str(Path(path).resolve())
    for path in {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
)
_OURS = ("orchestrator", "launchers", "hydra_plugins")


@dataclass(frozen=True)
class TorchSettings:
    """torch's process-wide switches that a trial (the user's model or script code) may flip."""

    num_threads: int
    deterministic: bool
    deterministic_warn_only: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    float32_matmul_precision: str
    fp32_precisions: tuple[tuple[str, Any], ...]
    """torch.backends' TF32 switches by path: the `fp32_precision` attributes (torch >= 2.9, where touching the
    legacy allow_tf32 flags as well raises), else the legacy flags."""
    default_dtype: Any
    grad_enabled: bool
    anomaly_enabled: bool

    @classmethod
    def capture(cls) -> "TorchSettings":
        import torch

        return cls(
            num_threads=torch.get_num_threads(),
            deterministic=torch.are_deterministic_algorithms_enabled(),
            deterministic_warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            float32_matmul_precision=torch.get_float32_matmul_precision(),
            fp32_precisions=tuple((path, getattr(_backend(path), name)) for path, name in _tf32_switches()),
            default_dtype=torch.get_default_dtype(),
            grad_enabled=torch.is_grad_enabled(),
            anomaly_enabled=torch.is_anomaly_enabled(),
        )

    def restore(self) -> None:
        import torch

        torch.set_num_threads(self.num_threads)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.deterministic_warn_only)
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.set_float32_matmul_precision(self.float32_matmul_precision)  # first: it sets some switches below
        for (path, name), (_, value) in zip(_tf32_switches(), self.fp32_precisions):
            setattr(_backend(path), name, value)
        torch.set_default_dtype(self.default_dtype)
        torch.set_grad_enabled(self.grad_enabled)
        torch.set_anomaly_enabled(self.anomaly_enabled)


@dataclass
class ProcessState:
    """What a fresh worker process looked like; `restore` makes the process look so again."""

    environ: dict[str, str]
    cwd: str
    path: list[str]
    modules: frozenset[str]
    torch: Optional[TorchSettings] = None
    rng: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def capture(cls) -> "ProcessState":
        """The state now, torch's included when torch is imported."""
        state = cls(dict(os.environ), os.getcwd(), list(sys.path), frozenset(sys.modules))
        if "torch" in sys.modules:
            state.capture_torch()
        return state

    def capture_torch(self) -> None:
        """Add torch's settings and generators (once torch is imported, before a trial changes them)."""
        if self.torch is not None:
            return
        import numpy as np
        import torch

        self.torch = TorchSettings.capture()
        self.rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}

    def restore(self) -> list[str]:
        """Put the process back as captured; returns the user modules it forgot (imported anew when next needed)."""
        os.environ.clear()
        os.environ.update(self.environ)
        os.chdir(self.cwd)
        sys.path[:] = self.path
        forgotten = [name for name in list(sys.modules) if name not in self.modules and _users(name)]
        for name in forgotten:
            del sys.modules[name]
        importlib.invalidate_caches()
        if self.torch is not None:
            self._restore_torch()
        return forgotten

    def _restore_torch(self) -> None:
        import numpy as np
        import torch

        assert self.torch is not None
        self.torch.restore()
        random.setstate(self.rng["python"])
        np.random.set_state(self.rng["numpy"])
        torch.set_rng_state(self.rng["torch"])
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(0)  # the loop seeds every device at its start; no trial's stream carries over
        if "torch._dynamo" in sys.modules:  # compiled graphs and their guards hold the trial's code and shapes
            torch.compiler.reset()


_FP32_PRECISION_PATHS = (
    "",
    "cuda.matmul",
    "cudnn",
    "cudnn.conv",
    "cudnn.rnn",
    "mkldnn",
    "mkldnn.matmul",
    "mkldnn.conv",
    "mkldnn.rnn",
)


def _backend(path: str) -> Any:
    import torch

    found: Any = torch.backends
    for part in filter(None, path.split(".")):
        found = getattr(found, part)
    return found


def _tf32_switches() -> list[tuple[str, str]]:
    """(backend path, attribute) of every TF32 switch this torch has."""
    if hasattr(_backend("cuda.matmul"), "fp32_precision"):
        return [(path, "fp32_precision") for path in _FP32_PRECISION_PATHS if hasattr(_backend(path), "fp32_precision")]
    return [("cuda.matmul", "allow_tf32"), ("cudnn", "allow_tf32")]


def _users(name: str) -> bool:
    """Whether module `name` is the user's: neither ours nor installed (nor built into the interpreter)."""
    if name.split(".", 1)[0] in _OURS:
        return False
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) or getattr(module, "__file__", None)
    if not origin or not os.path.isabs(origin) or not os.path.exists(origin):  # built-in, frozen, made by code
        return False
    try:
        resolved = str(Path(origin).resolve())
    except OSError:
        return False
    return not resolved.startswith(_INSTALLED)
