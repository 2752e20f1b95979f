"""Secret-looking keys never reach the store; credentials inside values and texts are masked."""

from __future__ import annotations

import pytest

from orchestrator.metrics.redact import is_secret_key, redact_text, redact_value, safe_items


@pytest.mark.parametrize("key", ["password", "db.password", "api_key", "apiKey", "APIKey", "MLFLOW_TRACKING_TOKEN",
                                 "awsSecretAccessKey", "aws_secret_access_key", "client-secret", "credentials",
                                 "gcp.credentials.file", "PASSWD", "hf_token", "ssh.key"])
def test_secret_looking_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["checkpoint.keep_last", "model.hidden_sizes", "tokenizer", "max_tokens",
                                 "monkey", "mlflow.source.git.commit", "orchestrator.overrides", "optim.lr",
                                 "keys_sorted", "tracking.uri"])
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_credentials_in_urls_and_queries_are_masked_and_the_rest_kept():
    assert redact_value("postgresql://mlflow:s3cr3t@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert redact_value("http://alice:p@ss@host:5000/x") == "http://alice:***@host:5000/x"
    assert redact_value("https://host/api?run=1&token=abc123&x=2") == "https://host/api?run=1&token=***&x=2"
    assert redact_value("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact_value("user@example.com and a:b") == "user@example.com and a:b"


def test_safe_items_drop_secret_keys_and_mask_values():
    items = {"optim.lr": "0.1", "db.password": "hunter2", "API_TOKEN": "t0k3n",
             "tracking.uri": "http://bob:hunter2@server:5000"}
    assert safe_items(items) == {"optim.lr": "0.1", "tracking.uri": "http://bob:***@server:5000"}


def test_text_assignments_with_secret_keys_are_masked():
    text = ("task:\n- optim.lr=0.1\n- +db.password=hunter2\npassword: hunter2\n  api_key: 'abc'\n"
            '{"token": "xyz", "lr": 2}\nuri: sqlite:////tmp/x.db\n')
    masked = redact_text(text)
    assert "hunter2" not in masked and "abc" not in masked and "xyz" not in masked
    assert "- optim.lr=0.1" in masked and "+db.password=***" in masked and "password: ***" in masked
    assert '"lr": 2' in masked and "uri: sqlite:////tmp/x.db" in masked
