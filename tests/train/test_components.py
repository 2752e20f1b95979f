"""The user's own model, data and loss from `_target_` config: built as configured, or refused with the
key, the value and what was expected, before anything runs."""

from __future__ import annotations

import pytest
import torch

from orchestrator.config.schema import TargetConfig, TargetModelConfig
from orchestrator.errors import ConfigError
from orchestrator.train.components import (
    build_loss,
    build_target_model,
    check_components,
    import_target,
    training_flops_per_sample,
)
from orchestrator.train.step import Step
from tests.helpers import compose_job
from tests.own_code import importable_package, own_overrides

BAD_MODULE = """
import torch
from torch.utils.data import Dataset


class Pairs(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


def not_a_pair():
    return Pairs([torch.zeros(3)] * 4), None


def ragged():
    return Pairs([(torch.zeros(3), 0), (torch.zeros(5), 1)]), None


def one_set():
    return Pairs([(torch.zeros(3), 0)] * 4)


def empty():
    return Pairs([]), None


def features():
    return Pairs([(torch.zeros(3), 0)] * 4), None


def not_a_module():
    return "a string"
"""


@pytest.fixture
def package(tmp_path, monkeypatch):
    return importable_package(tmp_path / "user", monkeypatch, {"badpkg": BAD_MODULE})


def _problems(overrides, tmp_path) -> str:
    with pytest.raises(ConfigError) as error:
        check_components(compose_job(overrides, tmp_path))
    return str(error.value)


def test_the_inline_target_builds_the_users_model_data_and_loss(package, tmp_path):
    job = compose_job(own_overrides(package), tmp_path)
    assert job.model == TargetModelConfig(target="digitpng.nets.DigitNet", kwargs={"width": 8, "dropout": 0.1})
    assert (job.data.target, job.data.kwargs, job.data.batch_size) == (
        "digitpng.data.build",
        {"root": str(package / "pngs")},
        16,
    )
    assert job.loss == TargetConfig(target="digitpng.losses.SmoothedCrossEntropy", kwargs={"smoothing": 0.05})
    check = check_components(job)
    model = build_target_model(job.model)
    assert check.num_parameters == sum(p.numel() for p in model.parameters()) > 0
    assert (check.train_samples, check.eval_samples) == (1437, 360)
    assert len(list((package / "pngs").glob("*/*.png"))) == 1797
    loss = build_loss(job.loss)
    logits, targets = torch.zeros(2, 10), torch.tensor([1, 2])
    expected = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.05)
    assert torch.equal(loss(logits, targets), expected)


def test_a_config_directory_of_the_users_own_selects_the_same_components(package, tmp_path):
    from tests.own_code import EXAMPLE

    job = compose_job([f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]", "model=digitnet", "data=digitpng"], tmp_path)
    assert job.model.target == "digitpng.nets.DigitNet" and job.model.kwargs == {"width": 16, "dropout": 0.1}
    assert (job.data.batch_size, job.data.num_workers, job.data.kwargs) == (32, 1, {"root": "digit-pngs"})


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "model._target_=digitpng.nets.DigitNett",
            "model._target_=digitpng.nets.DigitNett is not valid: "
            "digitpng.nets has no attribute DigitNett (did you mean DigitNet?)",
        ),
        (
            "model._target_=digitpnng.nets.DigitNet",
            "model._target_=digitpnng.nets.DigitNet is not valid: no module named digitpnng",
        ),
        ("model._target_=DigitNet", "model._target_=DigitNet is not valid: give a dotted path"),
        (
            "+model.widht=4",
            "model.widht=4 is not valid: digitpng.nets.DigitNet has no parameter widht (did you mean "
            "width?); its parameters: width, num_classes, dropout",
        ),
        (
            "model._target_=badpkg.not_a_module",
            "model._target_=badpkg.not_a_module is not valid: it returned a str, expected a torch.nn.Module",
        ),
        ("data._target_=badpkg.not_a_pair", "item 0 of its train set is a Tensor, expected (inputs, targets)"),
        ("data._target_=badpkg.ragged", "two items of its train set do not batch together"),
        ("data._target_=badpkg.one_set", "it returned a Pairs, expected (train_dataset, eval_dataset or None)"),
        ("data._target_=badpkg.empty", "data._target_=badpkg.empty is not valid: its train set is empty"),
        (
            "data._target_=badpkg.features",
            "model._target_=digitpng.nets.DigitNet fails on a batch of "
            "data._target_=badpkg.features (inputs of shape [2, 3])",
        ),
    ],
)
def test_a_bad_target_names_the_key_the_value_and_what_is_expected(package, tmp_path, override, expected):
    overrides = [
        o
        for o in own_overrides(package)
        if not o.startswith(("+data.root", "+model.dropout")) or not override.startswith(("data.", "+model.widht"))
    ]
    if override.startswith("data."):
        overrides = [o for o in overrides if not o.startswith("data._target_")] + [override]
    elif override.startswith("model._target_"):
        overrides = [o for o in overrides if not o.startswith(("model._target_", "+model."))] + [override]
    else:
        overrides.append(override)
    assert expected in _problems(overrides, tmp_path)


def test_a_missing_keyword_says_which_and_how_to_set_it(package, tmp_path):
    (package / "needs.py").write_text("from torch import nn\n\ndef net(depth):\n    return nn.Linear(depth, 2)\n")
    overrides = [o for o in own_overrides(package) if not o.startswith(("model._target_", "+model."))]
    problems = _problems([*overrides, "model._target_=needs.net"], tmp_path)
    assert "model.depth is missing: needs.net needs it (add +model.depth=...)" in problems


def test_own_model_needs_own_data_and_the_other_way_round(package, tmp_path):
    with pytest.raises(ConfigError, match="model._target_=digitpng.nets.DigitNet is your own model"):
        compose_job(["model._target_=digitpng.nets.DigitNet"], tmp_path)
    with pytest.raises(ConfigError, match=r"model=cnn is not valid: data._target_=digitpng.data.build"):
        compose_job(["data._target_=digitpng.data.build"], tmp_path)
    with pytest.raises(ConfigError, match=r"loss.smoothing=0.1 is not valid without loss._target_"):
        compose_job(["+loss.smoothing=0.1"], tmp_path)


def test_flops_are_counted_without_touching_the_model_or_its_random_streams(package, monkeypatch, tmp_path):
    # torch points its compile cache at a folder of its own on the first count; here, at the test's
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    net_class = import_target("model._target_", "digitpng.nets.DigitNet")
    torch.manual_seed(0)
    model = torch.nn.Sequential(net_class(width=4), torch.nn.BatchNorm1d(10)).train()
    inputs, targets = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    flops = training_flops_per_sample(model, (inputs, targets), Step(torch.nn.functional.cross_entropy))
    # conv1 1->4, conv2 4->4 on 8x8 (3x3 kernels), linear 64->10: 2 FLOPs per multiply-add, backward twice
    forward = 2 * (8 * 8 * 4 * 9 + 8 * 8 * 4 * 4 * 9 + 64 * 10)
    assert forward * 2 <= flops <= forward * 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state()) and all(p.grad is None for p in model.parameters())
