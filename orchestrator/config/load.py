"""DictConfig -> JobConfig: the one place a Hydra DictConfig is read; then the job is validated (rules.validate)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orchestrator.config.problems import show
from orchestrator.config.rules import validate
from orchestrator.config.schema import (
    JobConfig,
    TargetConfig,
    TargetDataConfig,
    TargetModelConfig,
)
from orchestrator.errors import ConfigError


def load_config(cfg: DictConfig, base_dir: Path) -> JobConfig:
    """Build the typed, validated job config; relative paths are taken from `base_dir`."""
    unknown = unknown_keys(cfg)
    if unknown:
        raise ConfigError(unknown)
    job = OmegaConf.to_object(cfg)
    if not isinstance(job, JobConfig):
        raise TypeError(f"expected a composed JobConfig, got {type(job).__name__}")
    job = _absolute_paths(typed_targets(job), base_dir)
    validate(job)
    return job


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys added with `+` that the fixed schema does not have (Hydra accepts them; the frozen dataclasses
    would fail on them with a traceback): one problem each, naming the valid keys."""
    from orchestrator.config.hydra_errors import unknown_key_problem

    problems: list[str] = []
    _walk_unknown(cfg, JobConfig, "", problems, unknown_key_problem)
    return problems


def _walk_unknown(node: DictConfig, schema_type: Any, prefix: str, problems: list[str], describe) -> None:
    if not dataclasses.is_dataclass(schema_type):
        return  # a free-form node (runtime_env, the user's own model keys)
    fields = {field.name: field for field in dataclasses.fields(schema_type)}
    for key in node.keys():
        path = f"{prefix}{key!s}"
        if key not in fields:
            problems.append(describe(path, f"+{path}", getattr(schema_type, "__name__", None)))
            continue
        child = node._get_node(key)
        child_type = OmegaConf.get_type(child) if isinstance(child, DictConfig) else None
        if isinstance(child, DictConfig) and child_type is not None and dataclasses.is_dataclass(child_type):
            _walk_unknown(child, child_type, f"{path}.", problems, describe)


def _absolute_paths(job: JobConfig, base_dir: Path) -> JobConfig:
    """Pin relative locations to `base_dir`, so workers and the printed commands agree on them."""
    tracking = job.tracking
    sqlite_prefix = "sqlite:///"
    if tracking.uri.startswith(sqlite_prefix) and not tracking.uri.startswith(sqlite_prefix + "/"):
        # sqlite:///name.db is relative to the working directory; sqlite:////abs/name.db is absolute
        db_path = (base_dir / tracking.uri[len(sqlite_prefix) :]).resolve()
        tracking = dataclasses.replace(tracking, uri=f"{sqlite_prefix}{db_path}")
    checkpoint = dataclasses.replace(job.checkpoint, dir=str((base_dir / job.checkpoint.dir).resolve()))
    script = job.script
    if script.path is not None:
        script = dataclasses.replace(script, path=str((base_dir / script.path).resolve()))
    if script.log_dir is not None:
        script = dataclasses.replace(script, log_dir=str((base_dir / script.log_dir).resolve()))
    return dataclasses.replace(job, tracking=tracking, checkpoint=checkpoint, script=script)


TARGET_KEY = "_target_"
LOADER_KEYS = ("batch_size", "num_workers")
"""Keys of a data node that stay the loop's DataLoader settings instead of going to the user's callable."""


def typed_targets(job: JobConfig) -> JobConfig:
    """The job with its `_target_` nodes (the user's model, data and loss) typed.

    A model or data node composed from a YAML file without a schema (the user's own, or
    conf/*/target.yaml) reaches here as a plain dict; its keys become the callable's keyword arguments.
    """
    problems: list[str] = []
    model, data, loss = job.model, job.data, job.loss
    if isinstance(model, dict):
        target = _target_of("model", model, problems)
        model = TargetModelConfig(target=target, kwargs={k: v for k, v in model.items() if k != TARGET_KEY})
    if isinstance(data, dict):
        target = _target_of("data", data, problems)
        kwargs = {k: v for k, v in data.items() if k != TARGET_KEY and k not in LOADER_KEYS}
        loader = {k: data[k] for k in LOADER_KEYS if k in data}
        data = TargetDataConfig(target=target, kwargs=kwargs, **loader)
    if isinstance(loss, dict):
        loss_target = loss.get(TARGET_KEY)
        rest = {k: v for k, v in loss.items() if k != TARGET_KEY}
        if loss_target is None and rest:
            key = next(iter(rest))
            problems.append(
                f"loss.{key}={show(rest[key])} is not valid without loss._target_: name the loss "
                "callable, e.g. loss._target_=torch.nn.CrossEntropyLoss"
            )
        loss = None if loss_target is None else TargetConfig(target=str(loss_target), kwargs=rest)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(job, model=model, data=data, loss=loss)


def _target_of(group: str, node: dict, problems: list[str]) -> str:
    target = node.get(TARGET_KEY)
    if not isinstance(target, str) or not target:
        problems.append(
            f"{group}.{TARGET_KEY}={show(target)} is not valid: a {group} config of your own needs "
            f"{group}.{TARGET_KEY}, the dotted path of a callable (e.g. mypkg.nets.Net), or pick a built-in "
            f"{group}"
        )
        return ""
    return target
