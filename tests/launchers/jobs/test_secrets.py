"""Secrets never reach the tracking server or the disk by any channel, and still reach the workers.

A job and a sweep get four secrets of different names and shapes through every documented route: the
workers' environment (cluster.runtime_env.env_vars: a Hugging Face token, an API key under a secret
name, a pip index URL with a password under an ordinary name) and the script's arguments (a token
after --api-token, which the script even prints, as scripts do). Then every byte the tracking server
stored (its database and artifact store) and every file written under the working directory is
searched for each secret value.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.commands import main

PROBE = """
import hashlib, json, os, sys

def digest(value):
    return hashlib.sha256(value.encode()).hexdigest()

args = sys.argv[1:]
token = args[args.index("--api-token") + 1]
expected = json.loads(args[args.index("--expect") + 1])
received = {"HF_TOKEN": os.environ.get("HF_TOKEN", ""), "WANDB_API_KEY": os.environ.get("WANDB_API_KEY", ""),
            "PIP_INDEX_URL": os.environ.get("PIP_INDEX_URL", ""), "api_token": token}
wrong = sorted(name for name, value in received.items() if digest(value) != expected[name])
print(f"rank {os.environ['RANK']} got the api token {token}", flush=True)  # what a careless script does
if wrong:
    print(f"secrets that did not arrive intact: {wrong}", file=sys.stderr)
    sys.exit(3)
print(f"rank {os.environ['RANK']}: all {len(received)} secrets arrived", flush=True)
"""


def _secrets() -> dict[str, str]:
    word = secrets.token_hex(12)
    return {
        "HF_TOKEN": "hf_" + secrets.token_hex(16),
        "WANDB_API_KEY": f"wk{word}",
        "PIP_INDEX_URL": f"https://ci-reader:pw{secrets.token_hex(10)}@pypi.example.invalid/simple",
        "api_token": f"at{secrets.token_hex(12)}",
    }


def _secret_parts(values: dict[str, str]) -> dict[str, str]:
    """What must not appear anywhere: each value, and for the URL its password on its own."""
    parts = dict(values)
    parts["PIP_INDEX_URL password"] = values["PIP_INDEX_URL"].split(":")[2].split("@")[0]
    return parts


def _overrides(values: dict[str, str]) -> list[str]:
    expect = json.dumps({name: hashlib.sha256(value.encode()).hexdigest() for name, value in values.items()})
    env = (
        f"+cluster.runtime_env.env_vars={{HF_TOKEN:{values['HF_TOKEN']},WANDB_API_KEY:{values['WANDB_API_KEY']},"
        f"PIP_INDEX_URL:'{values['PIP_INDEX_URL']}'}}"
    )
    # the expected digests travel as one quoted argument: JSON's quotes and commas are Hydra syntax
    args = f"script.args=[--api-token,{values['api_token']},--expect,'{expect}']"
    return ["entrypoint=script", "script.path=probe.py", args, env, "scaling.num_workers=2"]


def _train(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "train", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def _leaks(folders: list[Path], parts: dict[str, str]) -> list[str]:
    """'<file>: <which secret>' for every file under `folders` that holds a secret value (as bytes)."""
    found = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            data = path.read_bytes()
            found += [f"{path}: {name}" for name, value in parts.items() if value.encode() in data]
    return found


@pytest.fixture
def project(tmp_path) -> Path:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "probe.py").write_text(PROBE)
    return folder


def test_a_job_and_a_sweep_record_no_secret_anywhere_and_the_workers_get_every_one(ray_cluster, mlflow_server, project):
    from mlflow import MlflowClient

    values = _secrets()
    common = [
        f"cluster.address={ray_cluster.address}",
        f"tracking.uri={mlflow_server.spec.url}",
        "tracking.experiment=secrets",
    ]
    job = _train([*_overrides(values), *common], project)
    assert job.returncode == 0, job.stderr[-3000:]
    sweep = _train(["-m", *_overrides(values), *common, "trainer.seed=1,2"], project)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    rejected = _train([*_overrides(values), *common, "scaling.num_workers=0"], project)
    assert rejected.returncode == 2 and "scaling.num_workers=0 is not valid" in rejected.stderr

    client = MlflowClient(mlflow_server.spec.url)
    runs = client.search_runs([client.get_experiment_by_name("secrets").experiment_id])
    assert len(runs) == 4  # the job, the sweep's parent and its two trials
    assert {run.info.status for run in runs} == {"FINISHED"}
    # the record is still useful: the secret-free parts are there, the secrets masked
    [single] = [
        run
        for run in runs
        if "orchestrator.overrides" in run.data.tags and "trainer.seed" not in run.data.tags["orchestrator.overrides"]
    ]
    assert "scaling.num_workers=2" in single.data.tags["orchestrator.overrides"]
    assert "HF_TOKEN:***" in single.data.tags["orchestrator.overrides"]
    # the probe exits 3 when a secret did not arrive intact; what it prints is in the console log, masked
    console = Path(client.download_artifacts(single.info.run_id, "console.log", str(project.parent)))
    assert console.read_text().count("secrets arrived") == 2 and "got the api token ***" in console.read_text()
    hydra = project / "outputs"
    assert sorted(path.name for path in hydra.rglob(".hydra/*")) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    assert (
        "HF_TOKEN: '***'" in next(hydra.rglob(".hydra/config.yaml")).read_text()
        or "HF_TOKEN: ***" in next(hydra.rglob(".hydra/config.yaml")).read_text()
    )

    server = Path(mlflow_server.spec.data_dir)
    assert _leaks([server, project], _secret_parts(values)) == []


def test_the_rayjob_takes_secret_variables_from_a_kubernetes_secret_and_holds_no_secret(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    values = _secrets()
    env = (
        f"+cluster.runtime_env.env_vars={{HF_TOKEN:{values['HF_TOKEN']},NCCL_DEBUG:INFO,"
        f"PIP_INDEX_URL:'{values['PIP_INDEX_URL']}'}}"
    )
    assert main(["k8s", env, "model=mlp", "--name", "with-secrets", "--secret", "team-tokens"]) == 0
    out, err = capsys.readouterr()
    assert _leaks([tmp_path], _secret_parts(values)) == [] and not any(v in out + err for v in values.values())
    document = yaml.safe_load(out)
    assert yaml.safe_load(document["spec"]["runtimeEnvYAML"]) == {"env_vars": {"NCCL_DEBUG": "INFO"}}
    assert "runtime_env" not in document["spec"]["entrypoint"]
    cluster = document["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        env_vars = {e["name"]: e for e in group["template"]["spec"]["containers"][0]["env"]}
        for name in ("HF_TOKEN", "PIP_INDEX_URL"):
            assert env_vars[name]["valueFrom"] == {"secretKeyRef": {"name": "team-tokens", "key": name}}
    assert "kubectl -n orchestrator create secret generic team-tokens" in err
    assert '--from-literal=HF_TOKEN="$HF_TOKEN"' in err


def test_a_secret_the_rayjob_cannot_take_from_a_secret_is_refused_masked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text("print('training')\n")
    token = f"at{secrets.token_hex(12)}"
    code = main(["k8s", "entrypoint=script", "script.path=train.py", f"script.args=[--api-token,{token}]"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and token not in err
    assert "script.args=[--api-token,***] is not valid for orchestrator k8s" in err
