"""`orchestrator export`'s steps: resolve the model, export it, check parity, log the file, check serving.

A file in the output folder is never overwritten: an export whose file exists is refused before any
work. An export that fails its parity check is deleted again, so a file that is there has passed.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from orchestrator.export.parity import DEFAULT_TOLERANCE, ParityResult, Tolerance, compare_outputs
from orchestrator.export.requirements import ExportError, OutputExists, require_onnx_extra
from orchestrator.registry.model_ref import ModelRef
from orchestrator.registry.store import ResolvedModel, resolve

FORMATS = ("onnx", "pt2")
ARTIFACT_DIR = "export"
"""Where the exported file goes among the run's artifacts."""

Say = Callable[[str], None]


@dataclass(frozen=True)
class ExportRequest:
    """What to export, how, where to, and whether to check MLflow's scoring server too."""

    ref: ModelRef
    format: str
    out_dir: Path
    tracking_uri: str
    serve_check: bool = False
    tolerance: Tolerance = DEFAULT_TOLERANCE


@dataclass
class ExportReport:
    """What the export did: the file, how long exporting took, each parity check, the artifact, the serve check."""

    path: Path
    export_s: float
    checks: list[ParityResult] = field(default_factory=list)
    artifact: Optional[str] = None
    served: Optional[ParityResult] = None


def target_path(request: ExportRequest, version: Optional[int]) -> Path:
    """DIR/<NAME-vVERSION or run-ID8>.<format>; an existing file there is an error (never overwritten)."""
    path = request.out_dir / f"{request.ref.file_stem(version)}.{request.format}"
    if path.exists():
        raise OutputExists(f"{path} exists and is never overwritten: remove it, or pass another --out folder")
    return path


def run_export(client: Any, request: ExportRequest, say: Say) -> ExportReport:
    """Export the model, check it against the eager model, log it to its run; raises ExportError on a difference."""
    if request.format == "onnx":
        require_onnx_extra()
    resolved = resolve(client, request.ref)
    path = target_path(request, resolved.version)
    with tempfile.TemporaryDirectory(prefix="orchestrator-export-") as folder:
        from orchestrator.export.model_source import check_inputs, load_logged_model

        model, example = load_logged_model(request.tracking_uri, resolved.artifact_uri, Path(folder))
        inputs = check_inputs(dict(client.get_run(resolved.run_id).data.tags), example)
    input_sets = [("input example", inputs.input_example)]
    if inputs.eval_batch is not None:
        input_sets.append(("eval batch", inputs.eval_batch))
    say(f"model: {resolved.ref} (run {resolved.run_id}, {resolved.model_uri}); checked on {inputs.eval_note}")
    request.out_dir.mkdir(parents=True, exist_ok=True)
    report = export_and_check(model, str(resolved.ref), request.format, path, input_sets, request.tolerance, say)
    report.artifact = _log_artifact(client, resolved.run_id, path)
    say(f"logged to run {resolved.run_id} as artifact {report.artifact}")
    if request.serve_check:
        report.served = serve_check(resolved, request, model, input_sets[-1][1], say)
    return report


def export_and_check(
    model: Any,
    what: str,
    file_format: str,
    path: Path,
    input_sets: Sequence[tuple[str, np.ndarray]],
    tolerance: Tolerance,
    say: Say,
) -> ExportReport:
    """Export `model` to `path` (onnx or pt2), run the file on each (label, inputs) set and compare with the
    eager model; a difference beyond `tolerance` removes the file and raises ExportError."""
    import torch

    from orchestrator.export.exporters import export_onnx, export_pt2
    from orchestrator.export.runtime import OnnxRunner, Pt2Runner, eager_outputs

    # trace on the larger set: torch.export makes a batch of 1 a constant, not a dynamic axis
    trace_on = torch.from_numpy(np.array(max((inputs for _, inputs in input_sets), key=len)))
    started = time.perf_counter()
    if file_format == "onnx":
        export_onnx(model, trace_on, path, what)
    else:
        export_pt2(model, trace_on, path, what)
    report = ExportReport(path=path, export_s=time.perf_counter() - started)
    say(f"exported {file_format} to {path} in {report.export_s:.1f} s (dynamic batch axis)")
    runner = OnnxRunner(path) if file_format == "onnx" else Pt2Runner(path)
    where = "ONNX Runtime (CPU)" if file_format == "onnx" else "torch.export.load"
    say(f"parity in {where} against the eager model; tolerance: {tolerance.describe()}")
    for label, inputs in input_sets:
        result = compare_outputs(label, eager_outputs(model, inputs), runner.run(inputs), tolerance)
        report.checks.append(result)
        say(f"  {result.describe()}")
    failed = [result for result in report.checks if not result.ok]
    if failed:
        path.unlink()  # a file that is there has passed its check
        raise ExportError(
            f"the exported model differs from the eager model beyond the tolerance "
            f"({tolerance.describe()}): {'; '.join(result.describe() for result in failed)}; "
            f"{path} was removed"
        )
    return report


def _log_artifact(client: Any, run_id: str, path: Path) -> str:
    """Log `path` under export/ in the run, numbered (name.2.onnx, ...) when the run has that name already."""
    existing = {Path(info.path).name for info in client.list_artifacts(run_id, ARTIFACT_DIR)}
    name, number = path.name, 2
    while name in existing:
        name = f"{path.stem}.{number}{path.suffix}"
        number += 1
    with tempfile.TemporaryDirectory(prefix="orchestrator-export-log-") as folder:
        staged = Path(folder) / name
        shutil.copyfile(path, staged)
        client.log_artifact(run_id, str(staged), ARTIFACT_DIR)
    return f"{ARTIFACT_DIR}/{name}"


def serve_check(
    resolved: ResolvedModel, request: ExportRequest, model: Any, inputs: np.ndarray, say: Say
) -> ParityResult:
    """Serve the logged model with `mlflow models serve`, send `inputs` over HTTP, compare with the eager model.

    The server's log goes to a temporary file; a server that fails to start has its log's end in the error.
    """
    from orchestrator.export.runtime import eager_outputs
    from orchestrator.export.scoring_server import ScoringServer

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="orchestrator-serve-") as folder:
        with ScoringServer(resolved.model_uri, request.tracking_uri, Path(folder) / "serve.log") as server:
            say(f"serve check: mlflow models serve on {server.url} answered in {time.perf_counter() - started:.1f} s")
            answered = server.predict(inputs)
    result = compare_outputs("served batch", eager_outputs(model, inputs), answered, request.tolerance)
    say(f"  {result.describe()}; server stopped")
    if not result.ok:
        raise ExportError(f"the scoring server's answers differ from the eager model: {result.describe()}")
    return result
