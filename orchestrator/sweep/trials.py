"""A sweep's trials: what each is, how it ended, the checks across trials, and the summary table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Collection, Optional, Sequence

from orchestrator.config.export import flat_params
from orchestrator.config.schema import JobConfig

if TYPE_CHECKING:
    from orchestrator.sweep.judging import TrialJudge

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
STOPPED = "STOPPED"
"""Stopped early by sweep.early_stop=median under the basic sweeper (the run is KILLED and tagged
orchestrator.early_stopped)."""
PRUNED = "PRUNED"
"""Pruned by the Optuna sweeper's pruner (the run is KILLED and tagged orchestrator.pruned)."""
EARLY_STOP_TAG = "orchestrator.early_stopped"
"""The tag of a STOPPED trial's run: why it stopped."""
PRUNED_TAG = "orchestrator.pruned"
"""The tag of a PRUNED trial's run: why Optuna pruned it."""
NOT_STARTED = "NOT STARTED"
"""The sweep was interrupted before the trial could start: it has no run."""
SHARED_SECTIONS = ("cluster.", "tracking.enabled", "tracking.uri", "tracking.experiment", "sweep.")
"""Keys every trial takes from the sweep: one cluster, one MLflow experiment, one objective."""


@dataclass(frozen=True)
class TrialSpec:
    """One trial as the sweeper asked for it: its number, its overrides and the job they compose."""

    number: int
    overrides: tuple[str, ...]
    job: JobConfig
    hydra_dir: Optional[str] = None
    """The folder of the trial's Hydra files (`<output dir>/.hydra`), logged with its run."""
    judge: Optional["TrialJudge"] = field(default=None, compare=False)
    """The sweeper's judge of this trial's evaluations (hydra/sweeper=optuna); None: the sweep's own rule."""


@dataclass(frozen=True)
class TrialRecord:
    """How a trial ended."""

    number: int
    overrides: tuple[str, ...]
    status: str
    """FINISHED, FAILED, KILLED (interrupted), STOPPED (median early stopping), PRUNED (Optuna) or NOT STARTED."""
    objective: Optional[float] = None
    """The last value of sweep.objective the trial reported (None without one)."""
    duration_s: float = 0.0
    run_id: Optional[str] = None
    error: Optional[str] = None
    started_at: Optional[float] = None
    """time.time() when the trial started (None when it never did)."""
    ended_at: Optional[float] = None


def shared_key_problems(sweep: JobConfig, trial: JobConfig) -> list[str]:
    """Keys a trial may not change from the sweep's config, each with what to do instead."""
    base, own = flat_params(sweep), flat_params(trial)
    problems = [
        f"{key}={own[key]} is not valid in a trial: every trial of a sweep uses the sweep's {key}={base[key]} "
        f"(one cluster, one MLflow experiment, one objective); set it once, outside the swept values"
        for key in own
        if key.startswith(SHARED_SECTIONS) and own[key] != base.get(key)
    ]
    if trial.trainer.resume is not None:
        problems.append(
            f"trainer.resume={trial.trainer.resume} is not valid in a sweep: each trial starts fresh; "
            f"resume a trial's run with a single `orchestrator train trainer.resume=RUN_ID ...`"
        )
    return problems


def override_key(override: str) -> str:
    """The key (or group) an override sets: `optim.lr` of `optim.lr=0.001`, `+extra` of `+extra=1`."""
    return override.split("=", 1)[0]


def varying(overrides: Sequence[str], fixed_keys: Collection[str]) -> tuple[str, ...]:
    """The trial's overrides that the sweep chose: those of keys not fixed on the sweep's command line."""
    return tuple(override for override in overrides if override_key(override) not in fixed_keys)


def best_trial(records: Sequence[TrialRecord], direction: str) -> Optional[TrialRecord]:
    """The finished trial with the best objective (None when no finished trial has one)."""
    # (objective, record) pairs: the objective, checked here, is a float and not None for the key
    scored = [
        (record.objective, record)
        for record in records
        if record.status == FINISHED and record.objective is not None and _is_value(record.objective)
    ]
    if not scored:
        return None
    pick = max if direction == "maximize" else min
    return pick(scored, key=lambda pair: pair[0])[1]


def sweep_status(records: Sequence[TrialRecord], interrupted: bool) -> str:
    """The parent run's status: KILLED when interrupted, FAILED when a trial failed, else FINISHED."""
    if interrupted:
        return KILLED
    return FAILED if any(record.status == FAILED for record in records) else FINISHED


def counts(records: Sequence[TrialRecord]) -> dict[str, int]:
    """Trials per status, in a fixed order, leaving out statuses no trial has."""
    found = {
        status: sum(record.status == status for record in records)
        for status in (FINISHED, STOPPED, PRUNED, FAILED, KILLED, NOT_STARTED)
    }
    return {status: number for status, number in found.items() if number}


def summary_table(records: Sequence[TrialRecord], fixed_keys: Collection[str], objective: str) -> str:
    """One line per trial: number, the overrides the sweep chose, status, objective, duration, run id."""
    header = ("trial", "overrides", "status", objective, "duration", "run")
    rows = [
        (
            str(record.number),
            " ".join(varying(record.overrides, fixed_keys)) or "-",
            record.status,
            f"{record.objective:.4f}" if _is_value(record.objective) else "-",
            f"{record.duration_s:.1f} s" if record.started_at is not None else "-",
            record.run_id or "-",
        )
        for record in sorted(records, key=lambda record: record.number)
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return (
        "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])
        + "\n"
    )


def _is_value(value: Optional[float]) -> bool:
    return value is not None and math.isfinite(value)
