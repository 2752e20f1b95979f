"""The end of a train command: its JobSummary, and that in words (outcome, accuracy, the run and how to open it).

Shared by the CLI, which prints it, and the job runner, which keeps it in the run's console log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from orchestrator.config.schema import JobConfig
from orchestrator.lifecycle.states import JobOutcome


@dataclass(frozen=True)
class JobSummary:
    """What the command prints at the end: the outcome and where the run is recorded."""

    outcome: JobOutcome
    run_id: Optional[str]
    experiment_id: Optional[str]
    duration_s: float
    """The job's duration: from its start (the config accepted, before the cluster is reached) to its outcome.
    Its MLflow run has the same start and end (a resumed run keeps its first start)."""
    flush_s: Optional[float] = None
    """How long the end of the run waited for buffered metrics to reach MLflow (None without tracking)."""


def summary_lines(job: JobConfig, summary: JobSummary) -> list[tuple[str, bool]]:
    """(line, goes to stderr) pairs for the summary of `job`."""
    outcome = summary.outcome
    lines: list[tuple[str, bool]] = []
    result = outcome.result if outcome.status == "FINISHED" else None  # a FINISHED job always has rank 0's result
    if result is not None:
        metrics = result.metrics
        lines.append((f"run FINISHED in {summary.duration_s:.1f} s after {result.step} steps", False))
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
