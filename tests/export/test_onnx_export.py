"""Real exports: torch.onnx's dynamo exporter and torch.export on the built-in models and on user models,
checked in ONNX Runtime; a model whose export computes something else, and operators no exporter handles.

Each export takes 3-10 s of CPU, so the module is `slow` (not in `make test-fast`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from orchestrator.config.schema import CnnConfig, GptConfig, MlpConfig
from orchestrator.export.parity import DEFAULT_TOLERANCE
from orchestrator.export.pipeline import export_and_check
from orchestrator.export.requirements import ExportError, MissingExtra, require_onnx_extra
from orchestrator.train.models import build_model

pytestmark = pytest.mark.slow


def _sets(example: torch.Tensor, batch: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    return [("input example", example.numpy()), ("eval batch", batch.numpy())]


BUILT_IN = {
    "mlp": (MlpConfig(), (64,), 10, lambda rows: torch.randn(rows, 64)),
    "cnn": (CnnConfig(), (1, 8, 8), 10, lambda rows: torch.randn(rows, 1, 8, 8)),
    "gpt": (GptConfig(), (32,), 64, lambda rows: torch.randint(0, 64, (rows, 32))),
}


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_a_built_in_model_exports_to_onnx_with_a_dynamic_batch_and_matches_in_onnx_runtime(name, tmp_path):
    config, shape, classes, inputs = BUILT_IN[name]
    torch.manual_seed(0)
    model = build_model(config, shape, classes).eval()
    lines: list[str] = []
    path = tmp_path / f"{name}.onnx"
    # traced on 64 rows, run on 4 and 64: the batch axis is dynamic in the file
    report = export_and_check(model, name, "onnx", path, _sets(inputs(4), inputs(64)), DEFAULT_TOLERANCE, lines.append)
    assert path.is_file() and [check.rows for check in report.checks] == [4, 64]
    assert all(check.ok and check.max_abs < DEFAULT_TOLERANCE.abs for check in report.checks)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a symbolic (dynamic) axis, not a number
    assert "tolerance: |exported - eager| <= 0.0001 + 0.001 * |eager|" in "\n".join(lines)


def test_pt2_export_round_trips_through_torch_export_load(tmp_path):
    model = build_model(MlpConfig(), (64,), 10).eval()
    report = export_and_check(
        model,
        "mlp",
        "pt2",
        tmp_path / "m.pt2",
        _sets(torch.randn(3, 64), torch.randn(20, 64)),
        DEFAULT_TOLERANCE,
        print,
    )
    assert all(check.ok and check.max_abs == 0.0 for check in report.checks)


class ExportsSomethingElse(nn.Module):
    """A user model that torch.export can trace, whose traced graph adds 1 that eager mode does not: the planted
    difference the parity check must catch."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        out = self.linear(inputs)
        return out + 1.0 if torch.compiler.is_exporting() else out


def test_an_export_that_computes_something_else_fails_its_parity_check_and_is_removed(tmp_path):
    path = tmp_path / "differs.onnx"
    with pytest.raises(ExportError) as raised:
        export_and_check(
            ExportsSomethingElse().eval(),
            "user model",
            "onnx",
            path,
            _sets(torch.randn(2, 8), torch.randn(16, 8)),
            DEFAULT_TOLERANCE,
            print,
        )
    message = str(raised.value)
    assert "differs from the eager model beyond the tolerance" in message
    assert "max abs error 1.00e+00" in message and "DIFFERS" in message
    assert not path.exists()


@torch.library.custom_op("orchtest::wobble", mutates_args=())
def wobble(inputs: torch.Tensor) -> torch.Tensor:
    """An operator of the user's own that ONNX has no translation for."""
    return inputs * 2


@wobble.register_fake
def _wobble_shape(inputs: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(inputs)


@torch.library.custom_op("orchtest::untraceable", mutates_args=())
def untraceable(inputs: torch.Tensor) -> torch.Tensor:
    """An operator without a fake (meta) kernel: torch.export cannot trace it."""
    return inputs * 3


class Uses(nn.Module):
    def __init__(self, operator) -> None:
        super().__init__()
        self.operator = operator

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.operator(inputs) + 1


@pytest.mark.parametrize(
    ("operator", "expected"),
    [
        (wobble, "the ONNX exporter has no translation for operator orchtest.wobble.default"),
        (untraceable, "torch.export cannot trace operator orchtest::untraceable"),
    ],
)
def test_an_operator_no_exporter_handles_gets_an_error_naming_it(operator, expected, tmp_path):
    path = tmp_path / "op.onnx"
    with pytest.raises(ExportError, match=expected):
        export_and_check(
            Uses(operator).eval(),
            "user model",
            "onnx",
            path,
            _sets(torch.randn(2, 4), torch.randn(8, 4)),
            DEFAULT_TOLERANCE,
            print,
        )
    assert not path.exists()


def test_without_the_export_extra_the_error_says_what_to_install(monkeypatch):
    import orchestrator.export.requirements as requirements

    require_onnx_extra()  # installed here: the dev setup installs the extra
    monkeypatch.setattr(requirements, "ONNX_MODULES", ("onnx", "onnxruntime_not_installed_here"))
    with pytest.raises(MissingExtra) as raised:
        require_onnx_extra()
    assert str(raised.value) == (
        "--format onnx needs onnxruntime_not_installed_here, which is not installed: pip install 'orchestrator[export]'"
    )
