"""The resolved JobConfig as plain data: YAML for the run's artifact, flat params for MLflow."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import yaml

from orchestrator.config.schema import JobConfig


def config_dict(job: JobConfig) -> dict[str, Any]:
    """The whole config as nested dicts and lists."""
    return dataclasses.asdict(job)


def config_yaml(job: JobConfig) -> str:
    """The resolved config as YAML (key order as in the schema)."""
    return yaml.safe_dump(config_dict(job), sort_keys=False)


def flat_params(job: JobConfig) -> dict[str, str]:
    """Dotted keys to string values: `scaling.num_workers` -> "2"; lists and maps as JSON."""
    flat: dict[str, str] = {}
    _flatten(config_dict(job), "", flat)
    return flat


def _flatten(node: Any, prefix: str, out: dict[str, str]) -> None:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            _flatten(value, f"{prefix}{key}.", out)
        return
    key = prefix[:-1]
    out[key] = node if isinstance(node, str) else json.dumps(node)
