"""One job end to end: connect, plan, open the run record, run the controller, record the outcome."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Optional, Sequence

from launchers.cluster.connection import connect
from launchers.jobs.run_record import RunRecord, hydra_files
from launchers.jobs.worker_groups import WorkerGroups, spawned
from launchers.monitoring.job_monitoring import job_observers
from launchers.pool.pool_client import PoolSource
from launchers.workers.worker_shelf import WorkerShelf
from orchestrator.cli.job_summary import JobSummary
from orchestrator.config.export import flat_params
from orchestrator.config.schema import JobConfig
from orchestrator.errors import ConfigError
from orchestrator.lifecycle.controller import Controller, ControllerSettings, JobObserver, ResumePoint, StopRequests
from orchestrator.lifecycle.observers import routing_observers
from orchestrator.lifecycle.resume import ResumeTarget, resolve_resume
from orchestrator.planning.planned_job import plan_on_cluster
from orchestrator.tracking.transport import check_server, is_server
from orchestrator.train.checkpoint import checkpoint_step, latest_checkpoint
from orchestrator.train.folder_lock import holding

__all__ = [
    "RAY_NAME_TAG",
    "JobSummary",
    "TrialLink",
    "check_resume",
    "checkpoint_directory",
    "hydra_files",
    "is_branch",
    "newest_checkpoint",
    "run_job",
]

RAY_NAME_TAG = "orchestrator.ray_name"
"""Run tag: the name of the job's placement group, workers (`<name>-worker<N>`) and monitors on Ray."""


@dataclass(frozen=True)
class TrialLink:
    """What a sweep hands one of its trials: its parent run, tags, observers and a way to stop it."""

    parent_run_id: Optional[str] = None
    """The sweep's parent run: the trial's run becomes its child (mlflow.parentRunId)."""
    run_name: Optional[str] = None
    """The trial run's name (instead of tracking.run_name; the logged params keep the config as composed)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Tags added to the trial's run."""
    observers: Callable[[Any], Sequence[JobObserver]] = lambda sink: ()
    """Given the trial's sink, the observers that follow the trial besides its monitoring."""
    stop_requests: StopRequests = field(default_factory=StopRequests)
    """Where the sweep asks the trial to stop (early stopping, Ctrl-C), from any thread."""
    shelf: Optional[WorkerShelf] = None
    """The sweep's idle groups (sweep.reuse_workers): the trial's workers come from there when one has its shape,
    and go there at its end."""
    owner: Optional[Hashable] = None
    """The trial's key on the shelf (its number): it takes the idle group the sweep reserved for it, if any."""


def run_job(
    job: JobConfig,
    console,
    overrides: Sequence[str] = (),
    *,
    hydra_dir: Optional[str] = None,
    link: Optional[TrialLink] = None,
    components: Any = None,
) -> JobSummary:
    """Run a validated job on its cluster; PlanError is raised before any actor starts.

    `hydra_dir` is the folder of this command's Hydra files (`<output dir>/.hydra`): they are logged with the
    run. A sweep's trial comes with its `link` to the sweep. `components` is the driver's check of the user's
    own model and data (train.components.ComponentCheck); its parameter count is logged as `model.num_parameters`.
    """
    link = link if link is not None else TrialLink()
    started_at = time.time()  # the run's start and end are wall-clock times in MLflow: one clock for both
    target = _checked_target(job)
    with contextlib.ExitStack() as locks:
        locked: Optional[Path] = None
        if target is not None and not is_branch(target):  # before Ray starts: this command writes into its folder
            locked = target.checkpoint.parent
            locks.enter_context(holding(locked, f"resume from {target.checkpoint}"))
        # MLflow's import and the store's opening overlap Ray's start; the model is logged while Ray shuts down
        with RunRecord(job, console, overrides, link, hydra_dir=hydra_dir, started_at=started_at) as record:
            with connect(job.cluster) as cluster:
                planned = plan_on_cluster(job, cluster)
                # the workers' processes start while the run opens (or come from the sweep's idle group, or a pool)
                source, owner = (PoolSource(job.cluster.pool), None) if job.cluster.pool else (link.shelf, link.owner)
                with spawned(planned.plan, job, source, owner) as groups:
                    sink = record.open(planned.plan, target, continues=target is not None and not is_branch(target))
                    sink.set_tags({RAY_NAME_TAG: groups.name})
                    if components is not None:
                        sink.log_params({"model.num_parameters": str(components.num_parameters)})
                    checkpoint_dir = checkpoint_directory(job, sink.run_id, target, groups.name)
                    if Path(checkpoint_dir) != locked:  # a new folder: a resume must not write in it meanwhile
                        locks.enter_context(holding(Path(checkpoint_dir), "train", required=False))
                    groups.run_in(checkpoint_dir, sink.run_id)
                    controller = _controller(job, groups, sink, console, link, target, checkpoint_dir)
                    with record.aborting():
                        outcome = controller.run()
                record.log_model(outcome)
            return record.finish(outcome)


def _checked_target(job: JobConfig) -> Optional[ResumeTarget]:
    """The checkpoint the job resumes from (None for a new job), checked before the cluster is touched."""
    target = resolve_resume(job.trainer.resume, Path(job.checkpoint.dir)) if job.trainer.resume else None
    if job.tracking.enabled and is_server(job.tracking.uri):
        check_server(job.tracking.uri, job.tracking.experiment)  # before the cluster is touched
    if target is not None:
        check_resume(job, target)
    return target


def _controller(
    job: JobConfig,
    groups: WorkerGroups,
    sink,
    console,
    link: TrialLink,
    target: Optional[ResumeTarget],
    checkpoint_dir: str,
) -> Controller:
    """The job's controller: its groups, its observers (monitoring, the sweep's, then the run's records)."""
    observers = [
        *job_observers(job, sink, console, groups.name),
        *link.observers(sink),
        *routing_observers(sink, console, job.entrypoint),
    ]
    settings = ControllerSettings(
        failure_policy=job.failure,
        watch_hangs=job.entrypoint == "builtin",
        startup_timeout_s=job.scaling.rendezvous_timeout_s,
        entrypoint=job.entrypoint,
    )
    resume = ResumePoint(str(target.checkpoint), target.step) if target is not None else ResumePoint()
    return Controller(
        groups,
        console,
        observers,
        settings,
        resume,
        stop_requests=link.stop_requests,
        find_checkpoint=lambda: newest_checkpoint(Path(checkpoint_dir)),
    )


def is_branch(target: ResumeTarget) -> bool:
    """Whether the resume starts from an older checkpoint than the newest of its run (then: a new run)."""
    newest = latest_checkpoint(target.checkpoint.parent)
    return newest is not None and newest != target.checkpoint


def check_resume(job: JobConfig, target: ResumeTarget) -> None:
    """Refuse, before the cluster is touched, a resume that would load the wrong checkpoint or change a finished run.

    The checkpoint's model and data config must be the job's (a mismatch would fail on every rank, or
    worse, load); a FINISHED run takes a resume only when the job asks for more training than it did.
    """
    from orchestrator.lifecycle.resume import (
        extends_finished_run,
        finished_run_problem,
        identity_problems,
        model_data_identity,
    )
    from orchestrator.train.checkpoint import is_sharded, saved_config

    resume = job.trainer.resume or ""
    problems = []
    saved = saved_config(target.checkpoint) if job.entrypoint == "builtin" else None
    if saved is not None:
        problems += identity_problems(resume, saved, model_data_identity(flat_params(job)))
    if job.entrypoint == "builtin" and job.scaling.strategy == "fsdp" and not is_sharded(target.checkpoint):
        problems.append(
            f"trainer.resume={resume} is not valid with scaling.strategy=fsdp: {target.checkpoint} is a "
            "single-file checkpoint from before sharded checkpoints, which FSDP cannot load; resume it with "
            "scaling.strategy=ddp (its next checkpoints load into FSDP)"
        )
    if job.tracking.enabled and target.run_id is not None and not is_branch(target):  # a branch opens a new run
        from orchestrator.tracking.run_recorder import RunRecorder

        found = RunRecorder.lookup(job.tracking, target.run_id)
        if (
            found is not None
            and found[0] == "FINISHED"
            and not extends_finished_run(job.trainer.max_steps, job.trainer.max_epochs, target.step, found[1])
        ):
            problems.append(finished_run_problem(resume, target.run_id, target.step))
    if problems:
        raise ConfigError(problems)


def newest_checkpoint(directory: Path) -> Optional[tuple[str, int]]:
    """The newest complete checkpoint of the job and its step (None if none, or the folder is not visible here)."""
    path = latest_checkpoint(directory)
    return (str(path), checkpoint_step(path)) if path is not None else None


def checkpoint_directory(job: JobConfig, run_id: Optional[str], target: Optional[ResumeTarget], name: str) -> str:
    """Where the job's checkpoints go: its run's folder (a resumed run keeps writing into its own).

    A resume from an older checkpoint than its folder's newest is a branch: it gets a folder of its own,
    so the newer checkpoints it would reach again are never written over.
    """
    if target is not None and not is_branch(target) and (run_id is None or target.checkpoint.parent.name == run_id):
        return str(target.checkpoint.parent)
    return str(Path(job.checkpoint.dir) / (run_id or name))
