"""How one batch becomes a loss: the user's `trainer.step_fn`, or `loss(model(inputs), targets)`.

The loop only ever calls a Step, so a data set whose items are not `(inputs, targets)` (dicts of
tensors, several inputs) trains, evaluates and is measured the same way as one that is.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch

from orchestrator.errors import ConfigError
from orchestrator.train.components import LossFn, import_target

STEP_FN_KEY = "trainer.step_fn"


@dataclass(frozen=True)
class Step:
    """One batch -> (loss, metrics). `user` is the dotted path of trainer.step_fn (None for the default)."""

    loss_fn: LossFn
    user_fn: Optional[Callable[[torch.nn.Module, Any], Any]] = None
    user: Optional[str] = None

    def train(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
        """The loss to backpropagate and the step function's own metrics (none for the default)."""
        if self.user_fn is None:
            inputs, targets = batch
            return self.loss_fn(model(inputs), targets), {}
        return self._checked(self.user_fn(model, batch))

    def evaluate(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        """As `train`; the default also counts correct predictions when the outputs are class logits."""
        if self.user_fn is not None:
            loss, metrics = self._checked(self.user_fn(model, batch))
            return loss, dict(metrics)
        inputs, targets = batch
        outputs = model(inputs)
        loss = self.loss_fn(_as_float(outputs), targets)
        if not class_logits(outputs, targets):
            return loss, {}
        return loss, {"accuracy": (outputs.argmax(dim=-1) == targets).double().mean()}

    def _checked(self, value: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
        loss, metrics = value if isinstance(value, tuple) and len(value) == 2 else (value, {})
        if not (isinstance(loss, torch.Tensor) and loss.numel() == 1 and loss.is_floating_point()):
            raise ConfigError(
                [
                    f"{STEP_FN_KEY}={self.user} is not valid: it returned {_describe(value)}, expected a "
                    "scalar float loss tensor or (loss, metrics) with metrics a dict of scalars"
                ]
            )
        if not isinstance(metrics, Mapping):
            raise ConfigError(
                [
                    f"{STEP_FN_KEY}={self.user} is not valid: its metrics are a "
                    f"{type(metrics).__name__}, expected a dict of name -> scalar"
                ]
            )
        return loss, metrics


def build_step(step_fn: Optional[str], loss_fn: LossFn) -> Step:
    """The Step of the job: trainer.step_fn imported and checked to take (model, batch), else the default."""
    if step_fn is None:
        return Step(loss_fn)
    function = import_target(STEP_FN_KEY, step_fn)
    try:
        inspect.signature(function).bind(None, None)
    except TypeError:
        raise ConfigError(
            [
                f"{STEP_FN_KEY}={step_fn} is not valid: it must take (model, batch), its signature is "
                f"{inspect.signature(function)}"
            ]
        ) from None
    except ValueError:  # no signature to read (a builtin): the first call will say
        pass
    return Step(loss_fn, function, step_fn)


def scalar_metrics(metrics: Mapping[str, Any], step: Step) -> dict[str, torch.Tensor]:
    """The metrics as detached float64 scalars (tensors stay on their device: no sync per step)."""
    values = {}
    for key, value in metrics.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            values[str(key)] = value.detach().double().reshape(())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            values[str(key)] = torch.tensor(float(value), dtype=torch.float64)
        else:
            raise ConfigError(
                [
                    f"{STEP_FN_KEY}={step.user} is not valid: its metric {key!r} is "
                    f"{_describe(value)}, expected a number or a one-element tensor"
                ]
            )
    return values


def class_logits(outputs: Any, targets: Any) -> bool:
    """Whether `outputs` are class scores for integer `targets` (their shape plus one class axis)."""
    return (
        isinstance(outputs, torch.Tensor)
        and isinstance(targets, torch.Tensor)
        and not targets.is_floating_point()
        and outputs.dim() == targets.dim() + 1
        and outputs.shape[:-1] == targets.shape
    )


def _as_float(outputs: Any) -> Any:
    return outputs.float() if isinstance(outputs, torch.Tensor) and outputs.is_floating_point() else outputs


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"a {type(value).__name__}"
