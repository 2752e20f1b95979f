"""Secret-looking keys never reach the store; credentials inside values and texts are masked."""

from __future__ import annotations

import pytest

from orchestrator.redaction import Redactor, is_secret_key, redact_text, redact_value, safe_items


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db.password",
        "api_key",
        "apiKey",
        "APIKey",
        "MLFLOW_TRACKING_TOKEN",
        "awsSecretAccessKey",
        "aws_secret_access_key",
        "client-secret",
        "credentials",
        "gcp.credentials.file",
        "PASSWD",
        "hf_token",
        "ssh.key",
    ],
)
def test_secret_looking_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "checkpoint.keep_last",
        "model.hidden_sizes",
        "tokenizer",
        "max_tokens",
        "monkey",
        "mlflow.source.git.commit",
        "orchestrator.overrides",
        "optim.lr",
        "keys_sorted",
        "tracking.uri",
    ],
)
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_credentials_in_urls_and_queries_are_masked_and_the_rest_kept():
    assert redact_value("postgresql://mlflow:s3cr3t@db:5432/mlflow") == "postgresql://mlflow:***@db:5432/mlflow"
    assert redact_value("http://alice:p@ss@host:5000/x") == "http://alice:***@host:5000/x"
    assert redact_value("https://host/api?run=1&token=abc123&x=2") == "https://host/api?run=1&token=***&x=2"
    assert redact_value("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact_value("user@example.com and a:b") == "user@example.com and a:b"


def test_safe_items_drop_secret_keys_and_mask_values():
    items = {
        "optim.lr": "0.1",
        "db.password": "hunter2",
        "API_TOKEN": "t0k3n",
        "tracking.uri": "http://bob:hunter2@server:5000",
    }
    assert safe_items(items) == {"optim.lr": "0.1", "tracking.uri": "http://bob:***@server:5000"}


def test_text_assignments_with_secret_keys_are_masked():
    text = (
        "task:\n- optim.lr=0.1\n- +db.password=hunter2\npassword: hunter2\n  api_key: 'abc'\n"
        '{"token": "xyz", "lr": 2}\nuri: sqlite:////tmp/x.db\n'
    )
    masked = redact_text(text)
    assert "hunter2" not in masked and "abc" not in masked and "xyz" not in masked
    assert "- optim.lr=0.1" in masked and "+db.password=***" in masked and "password: ***" in masked
    assert '"lr": 2' in masked and "uri: sqlite:////tmp/x.db" in masked


def test_known_token_shapes_are_masked_wherever_they_occur():
    hf, github = "hf_" + "a1B2" * 8, "ghp_" + "Z9y8" * 9
    masked = redact_value(f"login with {hf} then push with {github}; AKIAABCDEFGHIJKLMNOP; hf_short")
    assert hf not in masked and github not in masked and "AKIAABCDEFGHIJKLMNOP" not in masked
    assert "hf_short" in masked  # too short to be a token: ordinary words stay


def test_the_redactor_finds_secret_values_in_configs_command_lines_and_environments():
    config = {
        "cluster": {
            "runtime_env": {
                "env_vars": {
                    "HF_TOKEN": "hf-value-1",
                    "NCCL_DEBUG": "INFO",
                    "PIP_INDEX_URL": "https://me:pip-pass-2@pypi.local/simple",
                }
            }
        },
        "script": {"args": ["--api-token", "arg-value-3", "--lr", "0.1", "--db-password=flag-value-4"]},
        "optim": {"lr": 0.1},
    }
    overrides = ["+cluster.runtime_env.env_vars={WANDB_API_KEY:cli-value-5}", "script.args=[--hf-token,cli-value-6]"]
    redactor = Redactor.of(config, overrides, {"MY_SECRET": "env-value-7", "HOME": "/root"})
    assert set(redactor.secrets) == {
        "hf-value-1",
        "pip-pass-2",
        "arg-value-3",
        "flag-value-4",
        "cli-value-5",
        "cli-value-6",
        "env-value-7",
    }
    text = (
        "overrides: +cluster.runtime_env.env_vars={WANDB_API_KEY:cli-value-5} and the script printed "
        "hf-value-1 arg-value-3 env-value-7; lr 0.1 INFO /root"
    )
    masked = redactor.text(text)
    assert not any(secret in masked for secret in redactor.secrets)
    assert masked.endswith("lr 0.1 INFO /root") and "{WANDB_API_KEY:***}" in masked


def test_the_redactor_keeps_records_useful():
    redactor = Redactor.of({"db": {"password": "hunter22"}, "short": {"token": "abc"}})
    assert redactor.secrets == ("hunter22",)  # 3 characters would mask ordinary text everywhere
    assert redactor.items({"optim.lr": "0.1", "db.password": "hunter22", "note": "pw hunter22"}) == {
        "optim.lr": "0.1",
        "note": "pw ***",
    }
    assert redactor.is_secret("x hunter22") and not redactor.is_secret("x hunter2")
