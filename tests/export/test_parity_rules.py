"""Pure export rules: the parity verdict and its errors, naming the operator an exporter failed on."""

from __future__ import annotations

import numpy as np

from orchestrator.export.failures import explain_export_failure, failing_operator
from orchestrator.export.parity import DEFAULT_TOLERANCE, Tolerance, compare_outputs


def test_outputs_within_the_tolerance_pass_and_report_their_largest_errors():
    expected = np.array([[1.0, -2.0], [100.0, 0.0]], dtype=np.float32)
    actual = expected + np.array([[1e-5, 0.0], [0.05, 0.0]], dtype=np.float32)
    result = compare_outputs("eval batch", expected, actual, Tolerance(abs=1e-4, rel=1e-3))
    assert result.ok and result.rows == 2
    assert np.isclose(result.max_abs, 0.05, rtol=1e-3)
    assert np.isclose(result.max_rel, 0.05 / 100, rtol=1e-2)
    assert result.describe().startswith("eval batch (2 rows): max abs error 5.00e-02, max rel error 5.00e-04: ok")


def test_one_element_beyond_the_tolerance_fails():
    expected = np.zeros((3, 4))
    actual = expected.copy()
    actual[2, 1] = 2 * DEFAULT_TOLERANCE.abs
    result = compare_outputs("input example", expected, actual)
    assert not result.ok
    assert result.describe().endswith(": DIFFERS")


def test_a_nan_or_a_shape_change_is_a_difference_while_equal_infinities_are_not():
    assert not compare_outputs("x", np.ones(3), np.array([1.0, np.nan, 1.0])).ok
    assert compare_outputs("x", np.array([-np.inf, 1.0]), np.array([-np.inf, 1.0])).ok
    shapes = compare_outputs("x", np.ones((2, 3)), np.ones((2, 4)))
    assert not shapes.ok and "shapes differ: eager (2, 3), exported (2, 4)" in shapes.describe()


ONNX_FAILURE = """Failed to convert the exported program to an ONNX model.
## Exception summary

<class 'torch.onnx._internal.exporter._errors.DispatchError'>: No ONNX function found for <OpOverload(op='orchtest.wobble', overload='default')>. Failure message: No decompositions registered
"""
EXPORT_FAILURE = """Failed to export the model with torch.export.
## Exception summary

<class 'torch.fx.experimental.symbolic_shapes.GuardOnDataDependentSymNode'>: Could not guard on data-dependent expression Eq(u0, 1)

The following call raised this error:
  File "/src/net.py", line 16, in forward
    if x.sum() > 0: return x
"""


def test_the_operator_an_exporter_failed_on_is_named():
    assert failing_operator(ONNX_FAILURE) == "orchtest.wobble.default"
    assert failing_operator("no fake impl registered for <CustomOpDef(orchtest::nofake)>.") == "orchtest::nofake"
    assert failing_operator("call_function[target=torch.ops.aten.item.default]") == "aten.item.default"
    message = explain_export_failure("run abc", "onnx", ONNX_FAILURE)
    assert message.startswith(
        "cannot export run abc to ONNX: the ONNX exporter has no translation for operator orchtest.wobble.default"
    )
    assert "--format pt2" in message


def test_a_tracing_failure_without_an_operator_names_the_line():
    message = explain_export_failure("run abc", "torch.export", EXPORT_FAILURE)
    assert message.startswith(
        "cannot export run abc: torch.export cannot trace the model at forward (/src/net.py:16): "
        "if x.sum() > 0: return x (GuardOnDataDependentSymNode: Could not guard on data-dependent expression Eq(u0, 1))"
    )
