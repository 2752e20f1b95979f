"""The end of a sweep in words and in MLflow: the summary table, the best trial, the parent run's results."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Optional, Sequence, TextIO

from orchestrator.config.export import redactor_for
from orchestrator.config.schema import JobConfig, SweepConfig
from orchestrator.redaction import redact_text
from orchestrator.sweep.trials import FAILED, KILLED, TrialRecord, best_trial, counts, summary_table, varying

if TYPE_CHECKING:  # sweep_session imports this module
    from launchers.jobs.sweep_session import SweepSettings

DEFAULT_EXPERIMENT = "orchestrator"


def parent_results(
    records: Sequence[TrialRecord], sweep: SweepConfig, status: str, error: Optional[str]
) -> tuple[dict[str, float], dict[str, str], Optional[str]]:
    """The parent run's metrics (trials per status, the best objective), tags (the best trial) and error."""
    metrics = {"sweep/trials": float(len(records))}
    metrics.update(
        {f"sweep/{name.lower().replace(' ', '_')}": float(number) for name, number in counts(records).items()}
    )
    tags: dict[str, str] = {}
    best = best_trial(records, sweep.direction)
    if best is not None:
        assert best.objective is not None  # best_trial picks among the trials that have an objective
        metrics["sweep/best_objective"] = best.objective
        tags["orchestrator.sweep.best_trial"] = str(best.number)
        if best.run_id:
            tags["orchestrator.sweep.best_run_id"] = best.run_id
    if status == KILLED:
        error = error or "interrupted by the user"
    elif status == FAILED and error is None:
        failed = [str(record.number) for record in records if record.status == FAILED]
        error = (
            f"trial{'s' if len(failed) != 1 else ''} {', '.join(failed)} failed"
            if failed
            else "the sweep stopped on an error (see the console)"
        )
    return metrics, tags, error


def print_summary(
    stream: TextIO,
    records: Sequence[TrialRecord],
    job: JobConfig,
    settings: SweepSettings,
    parent_run_id: Optional[str],
    wall_s: float,
) -> None:
    """The sweep's last lines: totals, one row per trial, the best trial (registered, with tracking.register_as),
    and how to compare the trials."""
    redactor = redactor_for(job, settings.overrides)
    totals = ", ".join(f"{number} {status}" for status, number in counts(records).items()) or "no trials"
    stream.write(f"sweep {settings.sweep_id}: {len(records)} trials in {wall_s:.1f} s: {totals}\n")
    stream.write(redactor.text(summary_table(records, settings.fixed_keys, job.sweep.objective)))
    best = best_trial(records, job.sweep.direction)
    if best is not None:
        chosen = redactor.text(" ".join(varying(best.overrides, settings.fixed_keys)))
        stream.write(
            f"best ({job.sweep.direction} {job.sweep.objective}): trial {best.number} ({chosen}): "
            f"{best.objective:.4f}\n"
        )
        if job.tracking.register_as and best.run_id:  # once per sweep: its best trial only (tracking.register_as)
            from orchestrator.registry.after_run import register_after_run

            stream.write(register_after_run(job.tracking, best.run_id, f"the best trial ({best.number})") + "\n")
    if parent_run_id is not None:
        stream.write(
            f"MLflow parent run: {parent_run_id} (experiment {job.tracking.experiment!r}); compare the "
            f"trials: {compare_command(job, settings.sweep_id)}\n"
        )
    stream.flush()


def compare_command(job: JobConfig, sweep_id: str) -> str:
    """`orchestrator compare --sweep ID` with the store and experiment of this sweep."""
    parts = ["orchestrator", "compare", "--sweep", sweep_id, "--tracking-uri", job.tracking.uri]
    if job.tracking.experiment != DEFAULT_EXPERIMENT:
        parts += ["--experiment", job.tracking.experiment]
    return redact_text(" ".join(shlex.quote(part) for part in parts))
