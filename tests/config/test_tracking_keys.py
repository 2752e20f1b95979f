"""Validation of the tracking keys: outage and flush limits, the store URI, no credentials in the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import ConfigError
from tests.helpers import compose_job


@pytest.mark.parametrize(
    "override, expected",
    [
        ("tracking.max_outage_s=-1", "tracking.max_outage_s=-1.0 is not valid: must be a number >= 0"),
        ("tracking.flush_timeout_s=0", "tracking.flush_timeout_s=0.0 is not valid: must be a number > 0"),
        (
            "tracking.uri=htp://127.0.0.1:5000",
            "tracking.uri=htp://127.0.0.1:5000 is not valid: use sqlite:///mlflow.db, "
            "http://127.0.0.1:5000 (a tracking server) or another MLflow store URI",
        ),
        ("tracking.uri=mlflow.db", "tracking.uri=mlflow.db is not valid"),
        (
            "tracking.uri=postgresql://mlflow:s3cret@db/mlflow",
            "tracking.uri=postgresql://mlflow:***@db/mlflow is not valid: credentials do not belong in the config",
        ),
        (
            "tracking.uri='https://mlflow.example.com/?token=abc'",
            "tracking.uri=https://mlflow.example.com/?token=*** is not valid",
        ),
    ],
)
def test_bad_tracking_values_are_named_with_what_is_valid(tmp_path: Path, override: str, expected: str):
    with pytest.raises(ConfigError) as raised:
        compose_job([override], tmp_path)
    assert expected in str(raised.value)
    assert "s3cret" not in str(raised.value) and "abc" not in str(raised.value)


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:5000",
        "https://mlflow.example.com",
        "sqlite:////data/runs.db",
        "postgresql+psycopg2://mlflow@db:5432/mlflow",
        "databricks",
    ],
)
def test_store_uris_mlflow_knows_are_accepted(tmp_path: Path, uri: str):
    assert compose_job([f"tracking.uri={uri}", "tracking.max_outage_s=0"], tmp_path).tracking.uri == uri
