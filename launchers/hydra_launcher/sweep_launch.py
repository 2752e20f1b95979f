"""The Hydra side of hydra/launcher=ray: each trial's config and output directory, and the sweeper's answers.

Hydra's own launchers run a trial through `hydra.core.utils.run_job`, which sets process-wide state
(the HydraConfig singleton, the working directory, logging, environment variables) for the whole
trial. Trials here run side by side on threads, so this module does that job's preparation on the
driver's thread, one trial at a time: compose the trial's config, resolve its output directory,
build its JobConfig and, once the batch is valid, write its redacted `.hydra/` files. The working directory stays put and per-trial
log files and `hydra.job.env_set` are not supported (rejected with a message when set).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, cast

from orchestrator.config.export import redactor_for
from orchestrator.config.hydra_output import remove_empty_dirs, write_hydra_files, write_redacted
from orchestrator.config.load import load_config
from orchestrator.config.schema import JobConfig
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.interrupts import interrupts_held
from orchestrator.sweep.judging import TrialJudge
from orchestrator.sweep.session_holder import SweepSessionHolder
from orchestrator.sweep.trials import (
    FINISHED,
    PRUNED,
    STOPPED,
    TrialRecord,
    TrialSpec,
    override_key,
    shared_key_problems,
)

if TYPE_CHECKING:  # only types here: the plugin imports this module when a batch launches
    from hydra.core.utils import JobReturn
    from omegaconf import DictConfig

    from hydra_plugins.orchestrator_ray_launcher.ray_launcher import RayLauncher
    from launchers.jobs.sweep_session import SweepSession

log = logging.getLogger(__name__)
MULTIRUN_FILE = "multirun.yaml"


@dataclass(frozen=True)
class PreparedTrial:
    """A trial ready to run, with what Hydra's JobReturn carries about it."""

    spec: TrialSpec
    config: DictConfig
    """The trial's whole config (with its `hydra` node), for Hydra's callbacks."""
    task_cfg: DictConfig
    hydra_cfg: DictConfig
    output_dir: str
    """Where the trial's .hydra/ files go (Hydra's sweep dir and subdir, resolved)."""


def launch(
    launcher: RayLauncher,
    job_overrides: Sequence[Sequence[str]],
    initial_job_idx: int,
    judges: Optional[Sequence[TrialJudge]] = None,
) -> list[JobReturn]:
    """Run one batch of trials (as many at once as the cluster allows); one JobReturn per trial, in order.

    A trial that failed or was stopped still gives a COMPLETED JobReturn, so that the sweeper goes on:
    its value is None for a failed trial (Optuna records that trial as failed) and the objective's
    last value for a stopped or pruned one. `judges` (hydra/sweeper=optuna): trial i is judged by
    judges[i] instead of the sweep's own early stopping rule, and tells it how it ended.
    """
    from hydra.core.utils import setup_globals

    setup_globals()
    try:
        # every trial of the batch is composed and checked before the cluster or the store is touched; a Ctrl-C
        # waits for that: one inside OmegaConf leaves a node half-built, and its clean-up's error then replaces the
        # KeyboardInterrupt (a Ctrl-C became "invalid configuration: 'NoneType' object has no attribute ...")
        with interrupts_held():
            problems = _hydra_problems(launcher)
            if problems:
                raise ConfigError(problems)
            sweep_job = job_of(launcher.config)
            trials = [
                _prepare(launcher, list(overrides), initial_job_idx + index)
                for index, overrides in enumerate(job_overrides)
            ]
            problems = [
                f"trial {trial.spec.number}: {problem}"
                for trial in trials
                for problem in shared_key_problems(sweep_job, trial.spec.job)
            ]
            if problems:
                raise ConfigError(problems)
            _check_own_components([trial.spec.job for trial in trials])
        _redact_sweep_file(launcher, sweep_job)
        judged = judges if judges is not None else [None] * len(trials)
        specs = [
            replace(trial.spec, hydra_dir=str(_write_outputs(trial)), judge=judge)
            for trial, judge in zip(trials, judged)
        ]
        if _holder(launcher).sweep is None:  # the first batch: say what the wait is
            log.info(f"{len(trials)} trials checked; starting Ray and the sweep's MLflow run (a few seconds)")
        session = _session(launcher, sweep_job)
        log.info(f"Launching {len(job_overrides)} trials on Ray")
        for trial in trials:
            launcher.hydra_context.callbacks.on_job_start(config=trial.config, task_function=launcher.task_function)
        records = session.run(specs)
    except OrchestratorError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        opened = _opened_sweep(launcher)
        if opened is not None:
            opened.fail(str(error))
        elif isinstance(error, ConfigError):
            _discard_sweep_file(launcher)
        raise SystemExit(error.exit_code) from None
    except KeyboardInterrupt:
        if _opened_sweep(launcher) is None:  # stopped before it started: no output, and no unredacted multirun.yaml
            _discard_sweep_file(launcher)
        raise
    returns = [_job_return(trial, record) for trial, record in zip(trials, records)]
    for trial, job_return in zip(trials, returns):
        launcher.hydra_context.callbacks.on_job_end(config=trial.config, job_return=job_return)
    return returns


def _check_own_components(jobs: Sequence[JobConfig]) -> None:
    """Build the user's own model and data once per distinct choice of them (ConfigError before any trial runs)."""
    from orchestrator.config.schema import TargetModelConfig

    distinct = {repr((job.model, job.data, job.loss)): job for job in jobs if isinstance(job.model, TargetModelConfig)}
    if distinct:
        from orchestrator.train.components import check_components

        for job in distinct.values():
            check_components(job)


def _session(launcher: RayLauncher, sweep_job: JobConfig) -> SweepSession:
    """The sweep's session, opened by the first batch and kept by the task function for the next ones."""
    from launchers.jobs.sweep_session import SweepSession, SweepSettings, new_sweep_id

    holder = _holder(launcher)
    config = launcher.config

    def open_session() -> SweepSession:
        overrides = tuple(config.hydra.overrides.task)
        settings = SweepSettings(
            sweep_id=new_sweep_id(),
            sweeper=str(config.hydra.runtime.choices["hydra/sweeper"]),
            overrides=overrides,
            fixed_keys=_fixed_keys(overrides),
            max_concurrent=launcher.max_concurrent,
        )
        return SweepSession.open(sweep_job, settings)

    return holder.sweep_session(open_session)


def _holder(launcher: RayLauncher) -> SweepSessionHolder:
    """The task function that keeps the sweep's session: that of `orchestrator train -m`."""
    if not isinstance(launcher.task_function, SweepSessionHolder):
        raise ConfigError(
            ["hydra/launcher=ray runs orchestrator trials: start the sweep with `orchestrator train -m ...`"]
        )
    return launcher.task_function


def _opened_sweep(launcher: RayLauncher) -> Optional[SweepSession]:
    """The sweep's session, once a batch (this one or an earlier one) has opened it."""
    holder = launcher.task_function
    return holder.sweep if isinstance(holder, SweepSessionHolder) else None


def _fixed_keys(overrides: Sequence[str]) -> frozenset[str]:
    """Keys the command line sets to one value (`model=mlp`), as opposed to sweeps (`optim.lr=1e-3,1e-2`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    # parse_overrides keeps each override's text as input_line (None only on overrides built in code)
    return frozenset(
        override_key(override.input_line)
        for override in parsed
        if not override.is_sweep_override() and override.input_line is not None
    )


def _hydra_problems(launcher: RayLauncher) -> list[str]:
    """Hydra settings this launcher cannot honour, each with what to do instead."""
    config, max_concurrent, problems = launcher.config, launcher.max_concurrent, []
    if max_concurrent is not None and (isinstance(max_concurrent, bool) or max_concurrent < 1):
        problems.append(
            f"hydra.launcher.max_concurrent={max_concurrent} is not valid: must be null (as many as "
            f"the cluster's free resources allow) or a number >= 1"
        )
    if launcher.address is not None:
        problems.append(
            f"hydra.launcher.address={launcher.address} is not valid for orchestrator trials: they run "
            f"where cluster.address says; set cluster.address={launcher.address} instead"
        )
    if config.hydra.job.chdir:
        problems.append(
            "hydra.job.chdir=true is not valid with hydra/launcher=ray: trials run side by side in one "
            "process, which has one working directory; leave it false (each trial's outputs go to its "
            "own directory anyway) or use hydra/launcher=basic"
        )
    if config.hydra.job.env_set:
        problems.append(
            f"hydra.job.env_set={dict(config.hydra.job.env_set)} is not valid with hydra/launcher=ray: "
            f"trials share one process environment; set worker variables in "
            f"cluster.runtime_env.env_vars instead"
        )
    return problems


def job_of(config: DictConfig) -> JobConfig:
    """The JobConfig of a composed config (its `hydra` node left out)."""
    from omegaconf import open_dict, read_write

    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return load_config(task_cfg, Path.cwd())


def _prepare(launcher: RayLauncher, overrides: list[str], number: int) -> PreparedTrial:
    """Compose the trial's config and resolve its output directory (written later, once the batch is valid)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import filter_overrides
    from omegaconf import OmegaConf, open_dict, read_write

    log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from orchestrator.config.hydra_errors import translate

    try:
        config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    except (HydraException, OmegaConfBaseException) as error:  # a swept value of the wrong type
        raise ConfigError([f"trial {number}: {translate(error, overrides)}"]) from None
    with open_dict(config):
        config.hydra.job.id = number
        config.hydra.job.num = number
    previous = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(config)  # ${hydra:...} in the trial's config resolves against the trial
        output_dir = os.path.abspath(
            os.path.join(
                str(OmegaConf.select(config, "hydra.sweep.dir")), str(OmegaConf.select(config, "hydra.sweep.subdir"))
            )
        )
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = output_dir
        HydraConfig.instance().set_config(config)
        # set_config stores a DictConfig (OmegaConf.masked_copy); HydraConfig annotates cfg as HydraConf
        hydra_cfg = copy.deepcopy(cast("DictConfig", HydraConfig.instance().cfg))
        task_cfg = copy.deepcopy(config)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        job = load_config(task_cfg, Path.cwd())
    finally:
        HydraConfig.instance().cfg = previous
    spec = TrialSpec(number=number, overrides=tuple(overrides), job=job)
    return PreparedTrial(spec=spec, config=config, task_cfg=task_cfg, hydra_cfg=hydra_cfg, output_dir=output_dir)


def _write_outputs(trial: PreparedTrial) -> Path:
    """The trial's output directory and its redacted .hydra/ files, once every trial of the batch is valid."""
    overrides = list(trial.config.hydra.overrides.task)
    return write_hydra_files(
        trial.output_dir, trial.task_cfg, trial.hydra_cfg, overrides, redactor_for(trial.spec.job, overrides)
    )


def _redact_sweep_file(launcher: RayLauncher, sweep_job: JobConfig) -> None:
    """Hydra's basic sweeper saved the whole config, command line included, as multirun.yaml: redact it."""
    written = Path(str(launcher.config.hydra.sweep.dir)) / MULTIRUN_FILE
    if written.is_file():
        overrides = list(launcher.config.hydra.overrides.task)
        write_redacted(written, written.read_text(encoding="utf-8"), redactor_for(sweep_job, overrides))


def _discard_sweep_file(launcher: RayLauncher) -> None:
    """A sweep rejected before any trial ran leaves no output: multirun.yaml (saved by the sweeper a moment
    ago) goes, then the folders made for it if they are empty."""
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    (sweep_dir / MULTIRUN_FILE).unlink(missing_ok=True)
    remove_empty_dirs(sweep_dir, Path.cwd())


def _job_return(trial: PreparedTrial, record: TrialRecord) -> JobReturn:
    from hydra.core.utils import JobReturn, JobRuntime, JobStatus

    job_return = JobReturn(
        overrides=list(trial.spec.overrides),
        cfg=trial.task_cfg,
        hydra_cfg=trial.hydra_cfg,
        working_dir=os.getcwd(),
        task_name=JobRuntime.instance().get("name"),
        status=JobStatus.COMPLETED,
    )
    job_return.return_value = record.objective if record.status in (FINISHED, STOPPED, PRUNED) else None
    return job_return
