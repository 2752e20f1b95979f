"""hydra/launcher=ray for any Hydra application: each job of the sweep is a Ray task of its own.

As Hydra's own launchers do, a job runs through `hydra.core.utils.run_job`, which sets process-wide
state (the HydraConfig singleton, the working directory with hydra.job.chdir, logging,
hydra.job.env_set). Each job therefore gets a fresh Ray worker process (max_calls=1), so nothing one
job sets reaches the next. The job's process starts in the driver's working directory where that
exists (relative sweep directories resolve as they would locally) and finds the app's own modules:
the app's folder and the working directory go on its PYTHONPATH.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from orchestrator.config.schema import ClusterConfig
from orchestrator.errors import ConfigError

if TYPE_CHECKING:  # only types here: the plugin imports this module when a batch launches
    from hydra.core.utils import JobReturn
    from hydra.types import HydraContext, TaskFunction
    from omegaconf import DictConfig
    from ray import ObjectRef

    from hydra_plugins.orchestrator_ray_launcher.ray_launcher import RayLauncher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AppJobResources:
    """What every job of the batch reserves, and how many run at once."""

    cpus: float
    gpus: float
    max_concurrent: Optional[int]


def app_job_resources(launcher: RayLauncher) -> AppJobResources:
    """The launcher's settings for app jobs, or a ConfigError naming each bad one (before Ray starts)."""
    problems = []
    for key in ("cpus_per_job", "gpus_per_job"):
        value = getattr(launcher, key)
        if not _is_number(value) or value < 0:
            shown = f"{value:g}" if _is_number(value) else value
            problems.append(f"hydra.launcher.{key}={shown} is not valid: must be a number >= 0")
    limit = launcher.max_concurrent
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        problems.append(
            f"hydra.launcher.max_concurrent={limit} is not valid: must be null (as many as the cluster "
            "allows) or a number >= 1"
        )
    if problems:
        raise ConfigError(problems)
    return AppJobResources(cpus=float(launcher.cpus_per_job), gpus=float(launcher.gpus_per_job), max_concurrent=limit)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def launch_app(launcher: RayLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run one batch of the app's jobs on Ray; one JobReturn per job, in order."""
    from hydra.core.utils import configure_log, setup_globals

    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    try:
        resources = app_job_resources(launcher)
    except ConfigError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    # every job's config is composed first: a bad override fails here, before the cluster is touched
    jobs = [
        _job_config(launcher, list(overrides), initial_job_idx + index) for index, overrides in enumerate(job_overrides)
    ]
    log.info(f"Ray launcher: launching {len(jobs)} jobs on Ray")
    for index, overrides in enumerate(job_overrides):
        log.info(f"\t#{initial_job_idx + index} : {' '.join(overrides)}")
    from launchers.cluster.connection import connect

    with connect(ClusterConfig(address=launcher.address)):
        return _run_jobs(launcher, jobs, resources)


def _job_config(launcher: RayLauncher, overrides: list[str], number: int) -> DictConfig:
    from omegaconf import open_dict

    sweep_config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{number}"
        sweep_config.hydra.job.num = number
    return sweep_config


def app_paths(main_file: Optional[str], cwd: str) -> list[str]:
    """The folders a job's process needs on PYTHONPATH to import the app's modules: the app's own, then cwd."""
    folders = [os.path.dirname(os.path.abspath(main_file))] if main_file else []
    return list(dict.fromkeys([*folders, cwd]))


def _runtime_env() -> dict[str, dict[str, str]]:
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    inherited = [part for part in os.environ.get("PYTHONPATH", "").split(os.pathsep) if part]
    paths = list(dict.fromkeys([*app_paths(main_file, os.getcwd()), *inherited]))
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}


def _run_jobs(launcher: RayLauncher, jobs: list[DictConfig], resources: AppJobResources) -> list[JobReturn]:
    """Submit the jobs (at most max_concurrent at once) and gather their JobReturns in order.

    Every task still running when this returns or raises (Ctrl-C) is cancelled: the launcher owns them.
    """
    import ray
    from hydra.core.singleton import Singleton

    remote = ray.remote(max_calls=1, max_retries=0)(run_app_job).options(
        num_cpus=resources.cpus, num_gpus=resources.gpus, runtime_env=_runtime_env()
    )
    state, cwd = Singleton.get_state(), os.getcwd()
    limit = resources.max_concurrent or len(jobs)
    waiting = list(enumerate(jobs))
    running: dict[ObjectRef[JobReturn], int] = {}
    results: dict[int, JobReturn] = {}
    try:
        while waiting or running:
            while waiting and len(running) < limit:
                index, job = waiting.pop(0)
                running[remote.remote(launcher.hydra_context, job, launcher.task_function, state, cwd)] = index
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                index = running.pop(ref)
                results[index] = _job_return(ref, jobs[index])
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
    return [results[index] for index in range(len(jobs))]


def _job_return(ref: ObjectRef[JobReturn], job_config: DictConfig) -> JobReturn:
    """The job's JobReturn; a job whose process died (killed, out of memory) becomes a FAILED one."""
    import ray
    from hydra.core.utils import JobReturn, JobStatus
    from ray.exceptions import RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as error:  # raised outside run_job (which keeps the task's own errors in its JobReturn)
        cause = error.as_instanceof_cause()
    except ray.exceptions.RayError as error:  # the worker died
        cause = RuntimeError(f"the job's Ray worker died: {error}")
    failed = JobReturn(
        overrides=list(job_config.hydra.overrides.task),
        hydra_cfg=job_config,
        status=JobStatus.FAILED,
        _return_value=cause,
    )
    return failed


def run_app_job(
    hydra_context: HydraContext,
    sweep_config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
    cwd: str,
) -> JobReturn:
    """What one job's Ray task runs: Hydra's state as on the driver, then `run_job` as Hydra's own launchers do."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    Singleton.set_state(singleton_state)
    setup_globals()
    if os.path.isdir(cwd):  # a node that shares the driver's filesystem; elsewhere the worker's own directory
        os.chdir(cwd)  # this process runs this job only (max_calls=1)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )
