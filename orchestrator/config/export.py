"""The resolved JobConfig as plain data: YAML for the run's artifact, flat params for MLflow."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Optional, Sequence

import yaml

from orchestrator.config.schema import JobConfig
from orchestrator.redaction import Redactor


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


def redactor_for(
    job: JobConfig, overrides: Sequence[str] = (), environ: Optional[Mapping[str, str]] = None
) -> Redactor:
    """The redaction step for everything this job's driver writes: it masks the secrets of the job's
    config, of its command line and of the driver's environment (a token the user exported and a
    script then prints), wherever they turn up."""
    return Redactor.of(config_dict(job), list(overrides), dict(os.environ if environ is None else environ))
