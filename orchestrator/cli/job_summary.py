"""The end of a train command in words: outcome, accuracy, the run id and how to open it in the UI.

Shared by the CLI, which prints it, and the job runner, which keeps it in the run's console log.
"""

from __future__ import annotations

from typing import Any, Optional


def summary_lines(job: Any, summary: Any) -> list[tuple[str, bool]]:
    """(line, goes to stderr) pairs for a JobSummary of `job`."""
    outcome = summary.outcome
    lines: list[tuple[str, bool]] = []
    if outcome.status == "FINISHED":
        metrics = outcome.result.metrics
        lines.append((f"run FINISHED in {summary.duration_s:.1f} s after {outcome.result.step} steps", False))
        if "eval/accuracy" in metrics:
            loss = f" (eval/loss {metrics['eval/loss']:.4f})" if "eval/loss" in metrics else ""
            lines.append((f"test accuracy: {metrics['eval/accuracy']:.2%}{loss}", False))
    else:
        lines.append((f"run {outcome.status} after {summary.duration_s:.1f} s: {outcome.error}", True))
        if outcome.traceback:
            lines.append((outcome.traceback.rstrip("\n"), True))
    if summary.run_id:
        lines.append((f"MLflow run: {summary.run_id} (experiment {job.tracking.experiment!r})", False))
        lines.append((f"open it: {ui_hint(job.tracking.uri, summary.experiment_id, summary.run_id)}", False))
    return lines


def ui_hint(tracking_uri: str, experiment_id: Optional[str], run_id: str) -> str:
    """The command (or URL) that shows this run in the MLflow UI."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {tracking_uri} --port 5000, then http://127.0.0.1:5000/{page}"
