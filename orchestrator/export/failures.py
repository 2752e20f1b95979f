"""What went wrong when a model could not be exported, in one sentence naming the operator (pure)."""

from __future__ import annotations

import re
from typing import Optional

_OPERATOR_PATTERNS = (
    # the ONNX exporter: No ONNX function found for <OpOverload(op='mylib.op', overload='default')>
    re.compile(r"OpOverload\(op='(?P<op>[\w.]+)', overload='(?P<overload>\w+)'\)"),
    # torch.export: no fake impl registered for <CustomOpDef(mylib::op)>
    re.compile(r"CustomOpDef\((?P<op>[\w:.]+)\)"),
    # a graph node: call_function[target=torch.ops.mylib.op.default]
    re.compile(r"target=torch\.ops\.(?P<op>[\w.]+)\]"),
)
_RAISED_AT = re.compile(
    r"The following call raised this error:\n\s*File \"(?P<file>[^\"]+)\", line (?P<line>\d+), in (?P<function>\w+)\n\s*(?P<code>.+)"
)
_SUMMARY = re.compile(r"## Exception summary\s*\n\s*<class '(?:[\w.]+\.)?(?P<kind>\w+)'>: (?P<text>[^\n]+)")


def failing_operator(message: str) -> Optional[str]:
    """The operator an export error names (mylib.op.default, mylib::op, aten.item.default), or None."""
    for pattern in _OPERATOR_PATTERNS:
        found = pattern.search(message)
        if found:
            groups = found.groupdict()
            return f"{groups['op']}.{groups['overload']}" if groups.get("overload") else groups["op"]
    return None


def explain_export_failure(what: str, stage: str, message: str) -> str:
    """One paragraph for the user: which step failed, on which operator or line, and what to do.

    `stage` is `torch.export` (tracing the model into a graph) or `onnx` (translating the graph).
    """
    operator = failing_operator(message)
    summary = _SUMMARY.search(message)
    cause = f"{summary.group('kind')}: {summary.group('text').strip()}" if summary else _first_line(message)
    raised = _RAISED_AT.search(message)
    where = (
        f" at {raised.group('function')} ({raised.group('file')}:{raised.group('line')}): {raised.group('code').strip()}"
        if raised
        else ""
    )
    if stage == "onnx" and operator:
        return (
            f"cannot export {what} to ONNX: the ONNX exporter has no translation for operator {operator} "
            f"({cause}); give it one through torch.onnx.export's custom_translation_table, replace the "
            f"operator in the model, or export with --format pt2"
        )
    if operator:
        return (
            f"cannot export {what}: torch.export cannot trace operator {operator} ({cause}); register a fake "
            f"(meta) implementation for it or replace it in the model"
        )
    return (
        f"cannot export {what}: {'torch.export cannot trace the model' if stage == 'torch.export' else 'the ONNX exporter failed'}"
        f"{where} ({cause}); see https://pytorch.org/docs/stable/export.html for what torch.export can trace"
    )


def _first_line(message: str) -> str:
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[0] if lines else "no message"
