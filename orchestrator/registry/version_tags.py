"""The tags a registered version carries: its run, its evaluation metrics, its config's digest (pure)."""

from __future__ import annotations

import hashlib
import math
from typing import Mapping, Optional

RUN_TAG = "orchestrator.run_id"
CONFIG_TAG = "orchestrator.config_sha256"
"""SHA-256 of the run's resolved config (its config.yaml artifact, as logged)."""
METRIC_PREFIX = "eval/"
"""Only evaluation metrics become tags: they describe the model, not the training run's speed."""


def config_digest(config_text: str) -> str:
    """Hex SHA-256 of the resolved config's YAML text."""
    return hashlib.sha256(config_text.encode()).hexdigest()


def version_tags(run_id: str, metrics: Mapping[str, float], config_text: Optional[str]) -> dict[str, str]:
    """Tags for a new version: the run id, each finite eval/ metric (repr: exact), the config's digest."""
    tags = {RUN_TAG: run_id}
    for key, value in sorted(metrics.items()):
        if key.startswith(METRIC_PREFIX) and math.isfinite(value):
            tags[key] = repr(float(value))
    if config_text is not None:
        tags[CONFIG_TAG] = config_digest(config_text)
    return tags


def tag_metrics(tags: Mapping[str, str]) -> dict[str, float]:
    """The eval/ metrics a version's tags hold (values that do not parse as numbers are left out)."""
    found = {}
    for key, value in tags.items():
        if key.startswith(METRIC_PREFIX):
            try:
                found[key] = float(value)
            except ValueError:
                continue
    return found
