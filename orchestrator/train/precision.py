"""Mixed precision: the autocast context and the grad scaler for `trainer.amp`."""

from __future__ import annotations

import contextlib

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """Autocast to bf16/fp16 on `device`, or a no-op for amp=none."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[amp])


def grad_scaler(device: torch.device, amp: str) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (bf16 has fp32's range and needs no scaling)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")


def set_tf32(device: torch.device, enabled: bool) -> None:
    """Allow (or forbid) TF32 tensor cores for float32 matmuls and convolutions on CUDA; CPUs have none.

    Set both ways on every attempt: the worker process may be reused by a later attempt of the job.
    """
    if device.type != "cuda":
        return
    precision = "tf32" if enabled else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9; mixing in the legacy flags raises
        torch.backends.cuda.matmul.fp32_precision = precision
        # cudnn's module gains `conv` at import (torch >= 2.9); its stubs do not declare it
        torch.backends.cudnn.conv.fp32_precision = precision  # type: ignore[attr-defined]
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled
