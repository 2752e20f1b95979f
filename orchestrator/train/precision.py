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
