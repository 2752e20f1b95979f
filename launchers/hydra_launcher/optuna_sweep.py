"""hydra/sweeper=optuna's sweep: one Optuna study, asked for `n_jobs` trials at a time and told each result.

The study is created in memory, or in sweep.storage (created there, or loaded with sweep.resume=true).
Under `orchestrator train -m` with hydra/launcher=ray every trial goes to the launcher with a judge of its
own (orchestrator.sweep.pruning.OptunaJudge): the launcher reports each evaluation of the objective to
it (trial.report, trial.should_prune) and tells it how the trial ended, as soon as it ends, so a study in
a storage keeps every finished trial even when the sweep is interrupted. With any other launcher or app
the trial's return value is its result. Every call into the study takes one lock: trials end and report
from several threads.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from orchestrator.config.schema import SWEEP_DIRECTIONS, SweepConfig
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.interrupts import interrupts_held
from orchestrator.redaction import redact_text
from orchestrator.sweep.judging import JudgedLauncher
from orchestrator.sweep.optuna_settings import (
    STATUS_ATTR,
    agreement_problem,
    consecutive_runs,
    counts_toward_n_trials,
    default_study_name,
    resumed_seed,
    sweeper_problems,
)
from orchestrator.sweep.pruning import OptunaJudge, make_pruner
from orchestrator.sweep.search_space import SearchSpace, grid, parse_search_space, suggest, trial_overrides
from orchestrator.sweep.session_holder import SweepSessionHolder
from orchestrator.sweep.trials import FAILED, FINISHED, NOT_STARTED
from orchestrator.tracking.store_guard import sqlite_path

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler
    from optuna.study import Study
    from optuna.trial import Trial

    from hydra_plugins.orchestrator_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)
RESULTS_FILE = "optimization_results.yaml"


def run_sweep(sweeper: OptunaSweeper, arguments: Sequence[str]) -> None:
    """Run the study to `n_trials` finished trials; a configuration problem exits 2 in our words."""
    try:
        _sweep(sweeper, arguments)
    except OrchestratorError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        holder = sweeper.task_function
        opened = holder.sweep if isinstance(holder, SweepSessionHolder) else None
        if opened is not None:  # the sweep's parent run records why it ended
            opened.fail(str(error))
        raise SystemExit(error.exit_code) from None


def _sweep(sweeper: OptunaSweeper, arguments: Sequence[str]) -> None:
    from optuna.samplers import GridSampler

    sweep = sweep_settings(sweeper)
    space = parse_search_space(sweeper.params, arguments)
    sampler, n_trials = _sampler(sweeper, space)
    judged = _judged(sweeper, sweep)
    name = sweeper.study_name or default_study_name(arguments, sweeper.params)
    study = open_study(name, sweep, sampler, make_pruner(sweep))
    if study.trials and not isinstance(sampler, GridSampler):
        study.sampler = sampler = _reseeded(sweeper, sampler, len(study.trials))
    done = sum(counts_toward_n_trials(trial.state.name, trial.user_attrs.get(STATUS_ATTR)) for trial in study.trials)
    where = "in memory" if sweep.storage is None else f"in {redact_text(sweep.storage)}"
    log.info(
        f"Optuna study {name!r} {where} ({'resumed' if sweep.resume else 'new'}): {type(sampler).__name__}, "
        f"{type(study.pruner).__name__} (sweep.early_stop={sweep.early_stop}), {sweep.direction}; "
        f"{done} of {n_trials} trials done"
    )
    extend = _custom_search_space(sweeper.custom_search_space)
    lock = threading.Lock()
    to_go = n_trials - done
    while to_go > 0:
        judges: list[OptunaJudge] = []
        try:
            # a Ctrl-C held until every trial asked for has its judge: else one stays RUNNING in the study
            with interrupts_held(), lock:
                for _ in range(min(sweeper.n_jobs, to_go)):
                    judges.append(OptunaJudge(study, study.ask(), lock, sweep))
                overrides = [_configure(sweeper, judge.trial, space, extend) for judge in judges]
            _launch(sweeper, [judge.trial for judge in judges], overrides, judges, judged)
        finally:  # a trial whose end nobody reported (an interrupt, an invalid batch) never ran: it does not count
            with interrupts_held():
                for judge in judges:
                    judge.ended(NOT_STARTED, None)
        to_go -= len(judges)
    _write_results(sweeper, study, name)


def sweep_settings(sweeper: OptunaSweeper) -> SweepConfig:
    """The sweep's typed settings: `orchestrator train`'s sweep.* (checked against hydra.sweeper.*), or for
    any other Hydra app the sweeper's own direction and storage."""
    if not isinstance(sweeper.task_function, SweepSessionHolder):
        if sweeper.direction not in SWEEP_DIRECTIONS:
            raise ConfigError(
                [f"hydra.sweeper.direction={sweeper.direction} is not valid: use one of minimize, maximize"]
            )
        return SweepConfig(direction=sweeper.direction, storage=sweeper.storage)
    from launchers.hydra_launcher.sweep_launch import job_of

    job = job_of(sweeper.config)
    choices = sweeper.config.hydra.runtime.choices
    problems = [
        agreement_problem("direction", sweeper.direction, job.sweep.direction),
        agreement_problem("storage", sweeper.storage, job.sweep.storage),
        *sweeper_problems(job.sweep, "optuna", str(choices.get("hydra/launcher")), job.tracking.uri),
    ]
    if any(problems):
        raise ConfigError([problem for problem in problems if problem])
    return job.sweep


def open_study(name: str, sweep: SweepConfig, sampler: BaseSampler, pruner: Any) -> Study:
    """The study: in memory; or created in sweep.storage (an existing one is an error); or, with sweep.resume,
    loaded from there, its trials left RUNNING by a sweep that was killed marked FAIL."""
    import optuna
    from optuna.trial import TrialState

    if sweep.storage is None:
        return optuna.create_study(study_name=name, sampler=sampler, pruner=pruner, direction=sweep.direction)
    where = f"sweep.storage={redact_text(sweep.storage)}"
    database = sqlite_path(sweep.storage)
    if sweep.resume and database is not None and not database.is_file():
        raise ConfigError(
            [
                f"sweep.resume=true: {where} has no database file {database}; resume from the storage of the sweep to continue"
            ]
        )
    try:
        names = optuna.get_all_study_names(sweep.storage)
    except Exception as error:  # a URL SQLAlchemy cannot open, a server that does not answer
        raise ConfigError([f"{where} cannot be opened: {type(error).__name__}: {error}"]) from None
    if not sweep.resume:
        if name in names:
            raise ConfigError(
                [
                    f"the Optuna study {name!r} already exists in {where}: continue it with sweep.resume=true, "
                    f"or start another with hydra.sweeper.study_name=NEW_NAME"
                ]
            )
        return optuna.create_study(
            study_name=name, storage=sweep.storage, sampler=sampler, pruner=pruner, direction=sweep.direction
        )
    if name not in names:
        raise ConfigError(
            [
                f"sweep.resume=true: there is no Optuna study {name!r} in {where}; its studies: "
                f"{', '.join(sorted(names)) or 'none'} (name one with hydra.sweeper.study_name=NAME)"
            ]
        )
    study = optuna.load_study(study_name=name, storage=sweep.storage, sampler=sampler, pruner=pruner)
    if study.direction.name.lower() != sweep.direction:
        raise ConfigError(
            [
                f"sweep.direction={sweep.direction} is not valid to resume study {name!r}: it was made to {study.direction.name.lower()}"
            ]
        )
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning(f"trial {trial.number} was left RUNNING by a sweep that did not end: marked FAIL, not counted")
        study.tell(trial.number, state=TrialState.FAIL)
    return study


def _sampler(sweeper: OptunaSweeper, space: SearchSpace) -> tuple[BaseSampler, int]:
    """The sampler, with the grid sampler's search space filled in (and n_trials at most the grid's size)."""
    from optuna.samplers import GridSampler

    sampler = sweeper.sampler
    if isinstance(sampler, functools.partial) and sampler.func is GridSampler:
        values = grid(space.distributions)
        sampler = sampler(values)
        return sampler, min(sweeper.n_trials, math.prod(len(choices) for choices in values.values()))
    return sampler, sweeper.n_trials


def _reseeded(sweeper: OptunaSweeper, sampler: BaseSampler, trials: int) -> BaseSampler:
    """A resumed study's sampler with its seed moved on by the study's trials: the same seed would replay the
    random values the study already tried (a grid sampler keeps its own account in the study instead)."""
    from hydra.utils import instantiate

    node = sweeper.config.hydra.sweeper.sampler
    seed = resumed_seed(node.get("seed"), trials)
    return sampler if seed is None else instantiate(node, seed=seed)


def _judged(sweeper: OptunaSweeper, sweep: SweepConfig) -> bool:
    """Whether the launcher runs the trials with their judges (needed for pruning)."""
    judged = isinstance(sweeper.task_function, SweepSessionHolder) and isinstance(sweeper.launcher, JudgedLauncher)
    if sweep.early_stop != "none" and not judged:
        raise ConfigError(
            [
                f"sweep.early_stop={sweep.early_stop} needs `orchestrator train -m` with hydra/launcher=ray, which watches each trial's evaluations"
            ]
        )
    return judged


def _custom_search_space(path: Optional[str]) -> Any:
    if path is None:
        return None
    from hydra.utils import get_method

    return get_method(path)


def _configure(sweeper: OptunaSweeper, trial: Trial, space: SearchSpace, extend: Any) -> tuple[str, ...]:
    """Ask the trial for every value of the search space: the trial's overrides."""
    for name, distribution in space.distributions.items():
        suggest(trial, name, distribution)
    if extend is not None:
        extend(sweeper.config, trial)
    return trial_overrides(trial.params, space.fixed)


def _launch(
    sweeper: OptunaSweeper,
    trials: Sequence[Trial],
    overrides: Sequence[tuple[str, ...]],
    judges: Sequence[OptunaJudge],
    judged: bool,
) -> None:
    """Hand the trials to the launcher, numbered as in the study (a launch numbers its trials consecutively)."""
    by_number = {trial.number: (chosen, judge) for trial, chosen, judge in zip(trials, overrides, judges)}
    for run in consecutive_runs(trial.number for trial in trials):
        batch = [list(by_number[number][0]) for number in run]
        batch_judges = [by_number[number][1] for number in run]
        if judged:
            sweeper.launcher.launch_judged(batch, run[0], batch_judges)
            continue
        for number, judge, job_return in zip(run, batch_judges, sweeper.launcher.launch(batch, initial_job_idx=run[0])):
            value = _returned(number, job_return)
            judge.ended(FAILED if value is None else FINISHED, value)


def _returned(number: int, job_return: Any) -> Optional[float]:
    """A trial's return value as a float, or None (logged) when it failed or returned none."""
    try:
        value = job_return.return_value  # re-raises the job's exception when it failed
        return float(value)
    except Exception as error:
        log.warning(f"trial {number} failed or returned no number: {type(error).__name__}: {error}")
        return None


def _write_results(sweeper: OptunaSweeper, study: Study, name: str) -> None:
    """optimization_results.yaml in the sweep's directory: the best trial's parameters and value."""
    from omegaconf import OmegaConf
    from optuna.trial import TrialState

    results: dict[str, Any] = {"name": "optuna", "study_name": name}
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        results.update(best_params=best.params, best_value=best.value, best_trial=best.number)
        log.info(f"Best parameters: {best.params}")
        log.info(f"Best value: {best.value}")
    else:
        log.warning("no trial of the study completed: it has no best value")
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS_FILE)
