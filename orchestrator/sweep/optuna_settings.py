"""hydra/sweeper=optuna, the pure part: which sweeper settings go together, the study's name, which trials count.

Nothing here imports optuna, hydra or ray: Optuna's trial states come in as their names (COMPLETE, PRUNED,
FAIL, RUNNING, WAITING), so the rules are tested on plain values.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable, Mapping, Optional, Sequence

from orchestrator.config.schema import SweepConfig
from orchestrator.sweep.trials import FAILED, FINISHED, PRUNED, override_key
from orchestrator.tracking.store_guard import sqlite_path

STATUS_ATTR = "orchestrator.status"
"""The user attribute of every Optuna trial the sweeper ended: the trial's status in the sweep (FINISHED,
PRUNED, FAILED, KILLED, NOT STARTED)."""
PRUNING_RULES = ("median", "asha", "hyperband")
"""The sweep.early_stop values that are Optuna pruners under hydra/sweeper=optuna."""
OPTUNA_ONLY_RULES = ("asha", "hyperband")
"""The sweep.early_stop values only the Optuna sweeper has."""
NAME_FREE_KEYS = ("sweep.resume", "sweep.storage", "cluster.")
"""Overrides left out of a study's default name: where the sweep runs and keeps its study, and whether it
resumes, do not make it another study."""


def sweeper_problems(sweep: SweepConfig, sweeper: str, launcher: str, tracking_uri: str) -> list[str]:
    """What a multirun's sweep.* settings need from hydra/sweeper and hydra/launcher, each with what to change."""
    problems = []
    if sweep.early_stop in OPTUNA_ONLY_RULES and sweeper != "optuna":
        problems.append(
            f"sweep.early_stop={sweep.early_stop} needs hydra/sweeper=optuna (it is Optuna's "
            f"{'SuccessiveHalvingPruner' if sweep.early_stop == 'asha' else 'HyperbandPruner'}); "
            f"hydra/sweeper={sweeper} stops trials early with sweep.early_stop=median only"
        )
    if sweep.early_stop in PRUNING_RULES and sweeper == "optuna" and launcher != "ray":
        problems.append(
            f"sweep.early_stop={sweep.early_stop} needs hydra/launcher=ray, which watches each trial's "
            f"evaluations; hydra/launcher={launcher} only sees a trial's final value"
        )
    for key, value in (("sweep.storage", sweep.storage), ("sweep.resume", sweep.resume or None)):
        if value is not None and sweeper != "optuna":
            problems.append(
                f"{key}={str(value).lower() if isinstance(value, bool) else value} is for the Optuna study: "
                f"it needs hydra/sweeper=optuna (hydra/sweeper={sweeper} keeps no study)"
            )
    shared = storage_problem(sweep.storage, tracking_uri)
    if shared is not None:
        problems.append(shared)
    return problems


def storage_problem(storage: Optional[str], tracking_uri: str) -> Optional[str]:
    """sweep.storage may not be MLflow's own SQLite file: both keep their schema version in alembic_version."""
    if storage is None or sqlite_path(storage) is None or sqlite_path(storage) != sqlite_path(tracking_uri):
        return None
    return (
        f"sweep.storage={storage} is not valid: it is MLflow's store (tracking.uri={tracking_uri}), and Optuna "
        f"and MLflow both keep their schema version in a table named alembic_version, so one database cannot "
        f"hold both; use a file of its own, e.g. sweep.storage=sqlite:///optuna.db"
    )


def agreement_problem(key: str, sweeper_value: object, sweep_value: object) -> Optional[str]:
    """hydra.sweeper.<key> follows sweep.<key>: a different value set on its own is a conflict."""
    if sweeper_value == sweep_value:
        return None
    return (
        f"hydra.sweeper.{key}={sweeper_value} disagrees with sweep.{key}={sweep_value}: set sweep.{key} only "
        f"(hydra.sweeper.{key} follows it)"
    )


def default_study_name(arguments: Sequence[str], params: Mapping[str, str]) -> str:
    """`sweep-<digest>` of the sweep's overrides and hydra.sweeper.params, so that the same command finds its study.

    sweep.resume, sweep.storage and cluster.* are left out (NAME_FREE_KEYS): the same sweep resumed from
    another cluster, or with sweep.resume=true added, is the same study. The order of the overrides does
    not matter.
    """
    kept = [arg for arg in arguments if not override_key(arg).lstrip("+~").startswith(NAME_FREE_KEYS)]
    kept += [f"hydra.sweeper.params.{key}={value}" for key, value in params.items()]
    digest = hashlib.sha256("\n".join(sorted(kept)).encode()).hexdigest()[:10]
    return f"sweep-{digest}"


def counts_toward_n_trials(state: str, status: Optional[str]) -> bool:
    """A trial of the study that ran to an end: COMPLETE, PRUNED, or failed on its own (not interrupted).

    `state` is Optuna's TrialState name, `status` the trial's STATUS_ATTR. A trial stopped by Ctrl-C
    (KILLED), never started, or left RUNNING by a sweep that was killed does not count: resuming runs
    another in its place.
    """
    return state in ("COMPLETE", "PRUNED") or (state == "FAIL" and status == FAILED)


def optuna_outcome(status: str, objective: Optional[float]) -> tuple[str, Optional[float]]:
    """What to tell Optuna about a trial that ended with `status`: (TrialState name, value for COMPLETE)."""
    if status == FINISHED and objective is not None and math.isfinite(objective):
        return "COMPLETE", objective
    if status == PRUNED:
        return "PRUNED", None
    return "FAIL", None


def resumed_seed(seed: Optional[int], trials: int) -> Optional[int]:
    """The sampler's seed for a study that already has `trials` trials: `seed + trials`, so that a resumed
    sweep goes on to new values instead of replaying the ones the study tried (None stays None: random)."""
    return None if seed is None else seed + trials


def consecutive_runs(numbers: Iterable[int]) -> list[list[int]]:
    """`numbers` cut into runs of consecutive ones ([3, 4, 7] -> [[3, 4], [7]]): a launch numbers its trials
    from its first one on."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return runs
