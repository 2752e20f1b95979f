"""trainer.step_fn: the user's own step on batches of any shape, checked on the driver, trained exactly."""

from __future__ import annotations

import pytest
import torch

from orchestrator.errors import ConfigError
from orchestrator.lifecycle.rank_reports import MetricsReport
from orchestrator.train.components import check_components
from orchestrator.train.step import Step, build_step
from tests.helpers import compose_job
from tests.own_code import importable_package, own_overrides
from tests.train.ranks import free_port, train_here

BAD_STEPS = """
import torch


def one_argument(model):
    return torch.zeros(())


def a_vector(model, batch):
    return model(batch["image"]).sum(dim=0)


def a_string_metric(model, batch):
    return model(batch["image"]).logsumexp(-1).mean(), {"note": "fine"}


def needs_tuples(model, batch):
    inputs, targets = batch
    return torch.nn.functional.cross_entropy(model(inputs), targets)
"""


@pytest.fixture
def package(tmp_path, monkeypatch):
    return importable_package(tmp_path / "user", monkeypatch, {"badsteps": BAD_STEPS})


def _job(package, tmp_path, *more):
    return compose_job(
        own_overrides(package, "+data.as_dicts=true", "trainer.step_fn=digitpng.steps.classify", *more), tmp_path
    )


def test_the_default_step_is_the_loss_of_the_models_outputs_and_evaluation_adds_accuracy():
    model = torch.nn.Linear(3, 2)
    inputs, targets = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    step = build_step(None, torch.nn.functional.cross_entropy)
    loss, metrics = step.train(model, (inputs, targets))
    assert torch.equal(loss, torch.nn.functional.cross_entropy(model(inputs), targets)) and metrics == {}
    _, metrics = step.evaluate(model, (inputs, targets))
    assert metrics["accuracy"].item() == (model(inputs).argmax(-1) == targets).double().mean().item()
    _, metrics = Step(torch.nn.functional.mse_loss).evaluate(model, (inputs, torch.randn(4, 2)))
    assert metrics == {}  # regression outputs: no accuracy


def test_a_step_fn_on_dict_batches_passes_the_drivers_check(package, tmp_path):
    check = check_components(_job(package, tmp_path))
    assert check.train_samples == 1437


@pytest.mark.parametrize(
    "step_fn, expected",
    [
        (
            "badsteps.one_argument",
            "trainer.step_fn=badsteps.one_argument is not valid: it must take (model, batch), its signature is (model)",
        ),
        (
            "badsteps.a_vector",
            "trainer.step_fn=badsteps.a_vector is not valid: it returned a torch.float32 tensor of "
            "shape [10], expected a scalar float loss tensor or (loss, metrics)",
        ),
        (
            "badsteps.a_string_metric",
            "trainer.step_fn=badsteps.a_string_metric is not valid: its metric 'note' is a str, "
            "expected a number or a one-element tensor",
        ),
        (
            "badsteps.needs_tuples",
            "trainer.step_fn=badsteps.needs_tuples fails on a batch of two items of "
            "data._target_=digitpng.data.build: TypeError",
        ),
        ("badsteps.classfy", "trainer.step_fn=badsteps.classfy is not valid: badsteps has no attribute classfy"),
    ],
)
def test_a_bad_step_fn_is_refused_on_the_driver_naming_it(package, tmp_path, step_fn, expected):
    job = _job(package, tmp_path, f"trainer.step_fn={step_fn}")
    with pytest.raises(ConfigError) as raised:
        check_components(job)
    assert expected in str(raised.value)


def test_a_step_fn_needs_your_own_data_set(tmp_path):
    with pytest.raises(ConfigError) as raised:
        compose_job(["trainer.step_fn=mypkg.step"], tmp_path)
    assert "trainer.step_fn=mypkg.step is not valid: is for your own data set (data._target_)" in str(raised.value)


def test_step_fn_metrics_are_logged_for_training_and_evaluation_and_a_resume_is_exact(package, tmp_path, monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # torch sets it when counting FLOPs
    job = _job(
        package,
        tmp_path,
        "trainer.max_steps=12",
        "trainer.log_every_n_steps=4",
        "checkpoint.every_n_steps=6",
        "data.num_workers=0",
    )
    reports, result = train_here(job, tmp_path / "full")
    train_logs = [r for r in reports if isinstance(r, MetricsReport) and "train/loss" in r.metrics]
    assert [r.step for r in train_logs] == [4, 8, 12]
    assert all(0 <= r.metrics["train/accuracy"] <= 1 and 0 < r.metrics["train/confidence"] <= 1 for r in train_logs)
    assert set(result.metrics) == {"eval/loss", "eval/accuracy", "eval/confidence"}
    assert [r for r in reports if isinstance(r, MetricsReport) and "train/model_tflops" in r.metrics]

    checkpoint = tmp_path / "full" / "step_000000006"
    resumed_reports, resumed = train_here(job, tmp_path / "resumed", resume_from=checkpoint)
    assert resumed.params_digest == result.params_digest
    again = [r for r in resumed_reports if isinstance(r, MetricsReport) and "train/loss" in r.metrics]

    def measured(key: str) -> bool:  # speed and memory: measurements, not results
        return key == "train/samples_per_s" or "flops" in key or key.startswith("memory/")

    assert {k: v for k, v in again[-1].metrics.items() if not measured(k)} == {
        k: v for k, v in train_logs[-1].metrics.items() if not measured(k)
    }
