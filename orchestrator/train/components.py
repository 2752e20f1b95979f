"""The user's own model, data and loss (`_target_` nodes): import, call, and check what came back.

Every problem is a ConfigError that names the key, the value and what was expected, so the driver
can run `check_components` before any cluster resource is taken and exit 2 on a misspelt path, a
wrong keyword or a data set of the wrong shape. The workers build the same components with the same
functions.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from orchestrator.config.schema import JobConfig, TargetConfig, TargetDataConfig, TargetModelConfig
from orchestrator.errors import ConfigError

LossFn = Callable[[Any, Any], torch.Tensor]


def import_target(key: str, path: str) -> Callable[..., Any]:
    """The callable at dotted `path` (`key` is the config key that named it, for the error)."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ConfigError([f"{key}={path} is not valid: give a dotted path module.name, e.g. mypkg.nets.Net"])
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ConfigError([_missing_module(key, path, module_name, error)]) from None
    except Exception as error:  # the user's module raised while it was imported
        raise ConfigError([f"{key}={path}: importing {module_name} failed: {type(error).__name__}: {error}"]) from None
    if not hasattr(module, attribute):
        raise ConfigError(
            [
                f"{key}={path} is not valid: {module_name} has no attribute {attribute}"
                f"{_did_you_mean(attribute, [n for n in dir(module) if not n.startswith('_')])}"
            ]
        )
    found = getattr(module, attribute)
    if not callable(found):
        raise ConfigError([f"{key}={path} is not valid: it is a {type(found).__name__}, not a class or function"])
    return found


def _missing_module(key: str, path: str, module_name: str, error: ModuleNotFoundError) -> str:
    if error.name and not module_name.startswith(error.name) and error.name != module_name:
        # the module exists but imports something that is not installed
        return f"{key}={path}: importing {module_name} failed: {error}"
    return (
        f"{key}={path} is not valid: no module named {error.name or module_name} (run from the folder that "
        "holds your package, or install it; on a cluster ship it with cluster.runtime_env)"
    )


def _did_you_mean(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def call_target(group: str, target: str, kwargs: dict[str, Any]) -> Any:
    """Call `group._target_=target` with `kwargs` after checking they fit its signature."""
    function = import_target(f"{group}._target_", target)
    _check_arguments(group, target, function, kwargs)
    try:
        return function(**kwargs)
    except Exception as error:
        raise ConfigError([f"{group}._target_={target} raised {type(error).__name__}: {error}"]) from None


def _check_arguments(group: str, target: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # builtins without a signature: let the call say it
        return
    parameters = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [
        name
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    problems = []
    if not takes_any:
        for key in kwargs:
            if key not in named:
                problems.append(
                    f"{group}.{key}={kwargs[key]} is not valid: {target} has no parameter {key}"
                    f"{_did_you_mean(key, named)}; its parameters: {', '.join(named) or 'none'}"
                )
    for name in named:
        parameter = parameters[name]
        if parameter.default is inspect.Parameter.empty and name not in kwargs:
            problems.append(f"{group}.{name} is missing: {target} needs it (add +{group}.{name}=...)")
    if problems:
        raise ConfigError(problems)


def build_target_model(model: TargetModelConfig) -> nn.Module:
    """The user's model, built from its config."""
    built = call_target("model", model.target, dict(model.kwargs))
    if not isinstance(built, nn.Module):
        raise ConfigError(
            [
                f"model._target_={model.target} is not valid: it returned a {type(built).__name__}, "
                "expected a torch.nn.Module"
            ]
        )
    return built


def build_target_data(data: TargetDataConfig) -> tuple[Any, Optional[Any]]:
    """The user's (train_dataset, eval_dataset or None), each checked to be a non-empty map-style data set."""
    built = call_target("data", data.target, dict(data.kwargs))
    if not (isinstance(built, (tuple, list)) and len(built) == 2):
        raise ConfigError(
            [
                f"data._target_={data.target} is not valid: it returned {_describe(built)}, expected "
                "(train_dataset, eval_dataset or None)"
            ]
        )
    train, evaluation = built
    for role, dataset in (("train", train), ("eval", evaluation)):
        if dataset is None and role == "eval":
            continue
        if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
            raise ConfigError(
                [
                    f"data._target_={data.target} is not valid: its {role} set is {_describe(dataset)}, "
                    "expected a map-style torch.utils.data.Dataset (with __getitem__ and __len__)"
                ]
            )
        if len(dataset) == 0:
            raise ConfigError([f"data._target_={data.target} is not valid: its {role} set is empty"])
    return train, evaluation


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


def build_loss(loss: Optional[TargetConfig]) -> LossFn:
    """The loss callable: `loss._target_` (a class is instantiated with its keys), else cross-entropy."""
    if not isinstance(loss, TargetConfig):  # None, or the schema's untyped default of a JobConfig built in code
        if loss not in (None, {"_target_": None}):
            raise ConfigError([f"loss={loss} is not valid: set loss._target_ (and its keys), or leave it null"])
        from orchestrator.train.evaluate import token_loss

        return token_loss
    function = import_target("loss._target_", loss.target)
    if inspect.isclass(function):
        return call_target("loss", loss.target, dict(loss.kwargs))
    if loss.kwargs:
        import functools

        return functools.partial(function, **loss.kwargs)
    return function


def split_item(data: TargetDataConfig, item: Any, index: int) -> tuple[Any, Any]:
    """(inputs, targets) of one item of the user's data set, or a ConfigError saying what it is instead."""
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1]
    raise ConfigError(
        [
            f"data._target_={data.target} is not valid: item {index} of its train set is "
            f"{_describe(item)}, expected (inputs, targets)"
        ]
    )


@dataclass(frozen=True)
class ComponentCheck:
    """What the driver learned from building the user's components once."""

    num_parameters: int
    train_samples: int
    eval_samples: Optional[int]


def check_components(job: JobConfig) -> Optional[ComponentCheck]:
    """Build the user's model and data once and run a batch of two through model and loss, or through
    trainer.step_fn (None for the built-in components); every problem is a ConfigError naming the key and value."""
    if not isinstance(job.model, TargetModelConfig) or not isinstance(job.data, TargetDataConfig):
        return None
    from torch.utils.data import default_collate

    from orchestrator.train.step import build_step

    train, evaluation = build_target_data(job.data)
    model = build_target_model(job.model)
    step = build_step(job.trainer.step_fn, build_loss(job.loss))
    items = [train[index] for index in range(min(2, len(train)))]
    if step.user is None:
        items = [split_item(job.data, item, index) for index, item in enumerate(items)]
    try:
        batch = default_collate(items)
    except Exception as error:
        raise ConfigError(
            [
                f"data._target_={job.data.target}: two items of its train set do not batch together "
                f"({type(error).__name__}: {error}); make every item's tensors the same shape"
            ]
        ) from None
    model.eval()
    if step.user is not None:
        _check_user_step(job, step, model, batch)
    else:
        _check_model_and_loss(job, step.loss_fn, model, *batch)
    return ComponentCheck(
        num_parameters=sum(p.numel() for p in model.parameters()),
        train_samples=len(train),
        eval_samples=None if evaluation is None else len(evaluation),
    )


def _check_user_step(job: JobConfig, step: Any, model: nn.Module, batch: Any) -> None:
    from orchestrator.train.step import scalar_metrics

    try:
        with torch.no_grad():
            _, metrics = step.train(model, batch)
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(
            [
                f"trainer.step_fn={step.user} fails on a batch of two items of data._target_="
                f"{job.data.target}: {type(error).__name__}: {error}"
            ]
        ) from None
    scalar_metrics(metrics, step)


def _check_model_and_loss(job: JobConfig, loss_fn: LossFn, model: nn.Module, inputs: Any, targets: Any) -> None:
    try:
        with torch.no_grad():
            outputs = model(inputs)
    except Exception as error:
        raise ConfigError(
            [
                f"model._target_={job.model.target} fails on a batch of data._target_={job.data.target} "
                f"(inputs of shape {_shape(inputs)}): {type(error).__name__}: {error}"
            ]
        ) from None
    try:
        value = loss_fn(outputs, targets)
    except Exception as error:
        raise ConfigError(
            [
                f"the loss fails on the outputs of model._target_={job.model.target} (shape "
                f"{_shape(outputs)}) and the targets of data._target_={job.data.target} (shape "
                f"{_shape(targets)}): {type(error).__name__}: {error}"
            ]
        ) from None
    if not (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()):
        raise ConfigError([f"the loss returned {_describe(value)}, expected a scalar float tensor"])


def _shape(value: Any) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def training_flops_per_sample(module: nn.Module, batch: Any, step: Any) -> float:
    """Model FLOPs of one training step (forward and backward) per sample, counted by torch on this batch.

    `step` is the job's train.step.Step. Counted on a copy in eval mode: the real model's parameters,
    buffers (batch-norm statistics) and the random streams (dropout) stay as they were, so the
    measurement does not change the run.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from orchestrator.train.loader import batch_size_of

    probe = copy.deepcopy(module).eval()
    counter = FlopCounterMode(display=False)
    with counter:
        step.train(probe, batch)[0].backward()
    return counter.get_total_flops() / max(batch_size_of(batch), 1)


def warm_up() -> None:
    """Load what a rank's first attempt would otherwise load lazily (the training loop's modules, torch's FLOP
    counter with its decompositions: seconds on a cold process), so that a hot spare starts its rank at once."""
    from torch.utils.flop_counter import FlopCounterMode

    import orchestrator.train.loop  # noqa: F401 - loaded for later use

    probe = nn.Linear(2, 2)
    with FlopCounterMode(display=False):
        probe(torch.zeros(1, 2)).sum().backward()
