"""The `orchestrator` command: exit codes, messages, the default job end to end, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from orchestrator.cli.commands import main
from tests.helpers import job_resources_left, wait_until

CASES = [
    ("scaling.num_workers=0", "scaling.num_workers=0 is not valid"),
    ("data.batch_size=0", "data.batch_size=0 is not valid"),
    ("data.batch_size=-3", "data.batch_size=-3 is not valid"),
    ("trainer.amp=fp8", "trainer.amp=fp8 is not valid: use one of none, bf16, fp16"),
    ("optim.lr=-1", "optim.lr=-1.0 is not valid: must be a number > 0"),
    ("trainer.grad_accum_steps=0", "trainer.grad_accum_steps=0 is not valid"),
]


@pytest.mark.parametrize("override, message", CASES)
def test_invalid_values_exit_2_before_ray_is_touched(ray_cluster, tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(tmp_path)
    code = main(["train", override, f"cluster.address={ray_cluster.address}"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert job_resources_left() == ([], [])
    assert not (tmp_path / "mlflow.db").exists()


def test_gpus_on_a_cpu_cluster_exit_2_after_connecting_before_any_actor(ray_cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "scaling.gpus_per_worker=1", f"cluster.address={ray_cluster.address}"])
    assert code == 2
    assert (
        "job needs 2 GPUs, cluster has 0: set scaling.gpus_per_worker=0 or set cluster.address to a GPU cluster"
        in capsys.readouterr().err
    )
    assert job_resources_left() == ([], [])
    assert not (tmp_path / "mlflow.db").exists()


def test_unknown_command_and_help(capsys):
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "train [overrides]" in capsys.readouterr().out


def _orchestrator(*args: str, cwd: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def test_console_script_exit_code_and_cfg_job(tmp_path):
    # the installed `orchestrator` script, watched by an atexit hook: it exits with main()'s code, with the
    # interpreter's objects frozen so that its final garbage collection skips them
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import atexit, gc, os\n"
        "atexit.register(lambda: open(os.environ['FROZEN_AT_EXIT'], 'w').write(str(gc.get_freeze_count())))\n"
    )
    frozen = tmp_path / "frozen"
    bad = subprocess.run(
        [str(Path(sys.executable).with_name("orchestrator")), "train", "trainer.amp=fp8"],
        cwd=tmp_path,
        text=True,
        capture_output=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(hook), "FROZEN_AT_EXIT": str(frozen)},
    )
    assert bad.returncode == 2 and "trainer.amp=fp8 is not valid" in bad.stderr
    assert int(frozen.read_text()) > 10_000
    shown = _orchestrator("train", "--cfg", "job", "model=mlp", cwd=tmp_path)
    out, err = shown.communicate(timeout=120)
    assert shown.returncode == 0 and "hidden_sizes:" in out and "num_workers: 2" in out


def test_the_default_job_end_to_end_on_an_embedded_cluster(ray_cluster, tmp_path, monkeypatch):
    """What `make run` runs: default config, embedded Ray, MLflow store in the working directory.

    The session's cluster runs meanwhile: the embedded job must start its own instance rather than
    join the latest cluster on the machine (what a bare ray.init() does).
    """
    import mlflow
    from mlflow import MlflowClient

    from orchestrator.config.schema import DigitsConfig
    from orchestrator.train.data import load_dataset

    process = _orchestrator("train", cwd=tmp_path)
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    accuracy = float(re.search(r"test accuracy: ([\d.]+)%", out).group(1)) / 100
    run_id = re.search(r"MLflow run: ([0-9a-f]{32})", out).group(1)
    uri = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert f"mlflow ui --backend-store-uri {uri}" in out
    assert accuracy >= 0.95
    assert re.search(r"epoch \d+ \| step \d+/\d+ \| loss [\d.]+ \| [\d,]+ samples/s", err)

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == "cnn" and run.data.params["scaling.num_workers"] == "2"
    eval_steps = [m.step for m in client.get_metric_history(run_id, "eval/accuracy")]
    assert len(eval_steps) == 4 and eval_steps == sorted(eval_steps)
    loss_steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    assert loss_steps[:3] == [10, 20, 30] and loss_steps[-1] == eval_steps[-1]
    assert client.get_metric_history(run_id, "train/samples_per_s")[0].value > 0
    assert "config.yaml" in [a.path for a in client.list_artifacts(run_id)]

    # loading a pt2 model sets TORCHINDUCTOR_CACHE_DIR; owning it here lets monkeypatch restore it afterwards
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-cache"))
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    data = load_dataset(DigitsConfig(), seed=0)
    reloaded = (model(data.test_x).argmax(dim=1) == data.test_y).float().mean().item()
    assert reloaded == pytest.approx(run.data.metrics["eval/accuracy"], abs=1e-6)


def test_sigterm_stops_the_ranks_marks_the_run_killed_and_releases_the_cluster(ray_cluster, tmp_path):
    """SIGTERM (what schedulers and `kill` send) must act like Ctrl-C, whose own test is in test_restarts.

    ray.init replaces the driver's SIGTERM handler with one that aborts the process mid-run.
    """
    from mlflow import MlflowClient

    process = _orchestrator(
        "train",
        "model=mlp",
        "trainer.max_steps=1000000",
        "tracking.log_model=false",
        f"cluster.address={ray_cluster.address}",
        cwd=tmp_path,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), name="test-stderr-reader")
    reader.start()
    wait_until(lambda: any("| step " in line for line in lines), 120, "the job to report progress")
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    reader.join()
    assert process.returncode == 130, "".join(lines)
    client = MlflowClient(f"sqlite:///{tmp_path.resolve()}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("orchestrator").experiment_id])
    assert run.info.status == "KILLED"
    wait_until(lambda: job_resources_left() == ([], []), 15, "the job's actors and placement group to go")
