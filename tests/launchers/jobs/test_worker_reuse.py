"""Worker reuse in sweeps (sweep.reuse_workers): a trial on the workers of the trial before it trains exactly as on
fresh ones, whatever that trial changed in the processes, and nothing is left once the sweep ends."""

from __future__ import annotations

import torch

from orchestrator.cli.commands import main
from orchestrator.train.checkpoint import load_checkpoint
from tests.helpers import assert_no_job_resources
from tests.own_code import importable_package

# the user's model and data: `leak=true` changes what a process shares with the next trial (environment, torch's
# settings, the generators, its module's own state); a plain model refuses to train in a process so changed
LEAKY = """
import os
import random

import torch
from torch.utils.data import TensorDataset

BUILT = []  # this module's own state: a fresh import of the module starts empty


class Net(torch.nn.Module):
    def __init__(self, leak: bool = False):
        super().__init__()
        pids = os.environ.get("REUSE_TEST_PIDS")  # set on the workers only: the driver checks the model too
        if pids is None:
            leak = False
        else:
            with open(pids, "a") as written:
                written.write(f"{os.getpid()}\\n")
        if not leak:
            found = {
                "env LEAKED": os.environ.get("LEAKED"),
                "deterministic": torch.are_deterministic_algorithms_enabled() or None,
                "matmul precision": torch.get_float32_matmul_precision() if torch.get_float32_matmul_precision() != "highest" else None,
                "module state": BUILT or None,
            }
            leaked = {name: value for name, value in found.items() if value is not None}
            if leaked:
                raise RuntimeError(f"state of an earlier trial leaked into this one: {leaked}")
        self.layers = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))
        if leak:
            BUILT.append(1)
            os.environ["LEAKED"] = "1"
            torch.use_deterministic_algorithms(True)
            torch.set_float32_matmul_precision("medium")
            random.seed(1234)

    def forward(self, inputs):
        return self.layers(inputs)


def data():
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(288, 16, generator=generator)
    labels = (inputs[:, :4] * torch.arange(1.0, 5.0)).argmax(dim=1)
    return TensorDataset(inputs[:256], labels[:256]), TensorDataset(inputs[256:], labels[256:])
"""


def _sweep(cluster, tmp_path, name: str, reuse: bool, leaks: str) -> int:
    return main(
        [
            "train",
            "-m",
            f"cluster.address={cluster.address}",
            f"+cluster.runtime_env.env_vars.REUSE_TEST_PIDS={tmp_path / name}.pids",
            "model._target_=leaky.Net",
            f"+model.leak={leaks}",
            "data._target_=leaky.data",
            "data.batch_size=16",
            "trainer.max_steps=12",
            "checkpoint.every_n_steps=12",
            "scaling.num_workers=2",
            "tracking.log_model=false",
            "monitor.enabled=false",
            "failure.max_restarts=0",
            "hydra.launcher.max_concurrent=1",  # one after the other: the second trial gets the first's workers
            f"sweep.reuse_workers={str(reuse).lower()}",
            f"checkpoint.dir={tmp_path / name}/checkpoints",
            f"hydra.sweep.dir={tmp_path / name}/sweep",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"tracking.experiment={name}",
        ]
    )


def _final_weights(tmp_path, name: str) -> list[dict[str, torch.Tensor]]:
    """Each trial's final parameters, in the order the trials ran (their checkpoint folders' times)."""
    folders = sorted((tmp_path / name / "checkpoints").iterdir(), key=lambda folder: folder.stat().st_mtime)
    return [load_checkpoint(max(folder.glob("step_*")))["model"] for folder in folders]


def test_a_trial_on_reused_workers_trains_as_on_fresh_ones_whatever_the_trial_before_changed(
    ray_cluster, tmp_path, monkeypatch
):
    importable_package(tmp_path / "code", monkeypatch, {"leaky": LEAKY})
    monkeypatch.chdir(tmp_path)

    assert _sweep(ray_cluster, tmp_path, "reused", True, "true,false") == 0
    pids = (tmp_path / "reused.pids").read_text().split()
    assert len(pids) == 4 and set(pids[:2]) == set(pids[2:]), (
        f"the second trial ran in the first one's processes: {pids}"
    )
    assert_no_job_resources()  # the idle group was removed when the sweep ended

    assert _sweep(ray_cluster, tmp_path, "fresh", False, "false") == 0
    fresh_pids = (tmp_path / "fresh.pids").read_text().split()
    assert not set(fresh_pids) & set(pids)
    [_, reused], [fresh] = _final_weights(tmp_path, "reused"), _final_weights(tmp_path, "fresh")
    assert reused.keys() == fresh.keys()
    for name, weight in fresh.items():
        assert torch.equal(reused[name], weight), f"{name} differs between reused and fresh workers"
    assert_no_job_resources()


def test_without_reuse_each_trial_starts_its_own_workers(ray_cluster, tmp_path, monkeypatch):
    importable_package(tmp_path / "code", monkeypatch, {"leaky": LEAKY})
    monkeypatch.chdir(tmp_path)
    # the leaking trial first: on fresh workers the plain one after it trains
    assert _sweep(ray_cluster, tmp_path, "own", False, "true,false") == 0
    pids = (tmp_path / "own.pids").read_text().split()
    assert len(pids) == 4 and not set(pids[:2]) & set(pids[2:])
    assert_no_job_resources()
