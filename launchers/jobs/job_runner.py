"""One job end to end: connect, plan, open the run record, run the controller, record the outcome."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from launchers.cluster.connection import connect
from launchers.monitoring.job_monitoring import job_observers
from launchers.workers.ray_worker_group import RayWorkerGroup
from orchestrator import __version__
from orchestrator.cli.job_summary import summary_lines
from orchestrator.config.export import config_yaml, flat_params, redactor_for
from orchestrator.config.schema import JobConfig
from orchestrator.errors import ConfigError
from orchestrator.lifecycle.controller import Attempt, Controller, JobObserver, JobOutcome, StopRequests
from orchestrator.lifecycle.resume import ResumeTarget, resolve_resume
from orchestrator.planning.plan import JobPlan, plan_job
from orchestrator.tracking.console_log import CONSOLE_ARTIFACT, ConsoleLog, captured
from orchestrator.tracking.metrics_sink import NullSink
from orchestrator.tracking.provenance import git_commit
from orchestrator.tracking.run_recorder import CONFIG_ARTIFACT, HYDRA_ARTIFACT_DIR, WORKERS_ARTIFACT, store_opened_early
from orchestrator.tracking.transport import check_server, is_server
from orchestrator.train.checkpoint import checkpoint_step, latest_checkpoint
from orchestrator.train.folder_lock import holding

RAY_NAME_TAG = "orchestrator.ray_name"
"""Run tag: the name of the job's placement group, workers (`<name>-worker<N>`) and monitors on Ray."""


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


def run_job(job: JobConfig, console, overrides: Sequence[str] = (), *, hydra_dir: Optional[str] = None,
            link: Optional[TrialLink] = None, components: Any = None) -> JobSummary:
    """Run a validated job on its cluster; PlanError is raised before any actor starts.

    `hydra_dir` is the folder of this command's Hydra files (`<output dir>/.hydra`): they are logged with the run. A sweep's
    trial comes with its `link` to the sweep. `components` is the driver's check of the user's own model
    and data (train.components.ComponentCheck); its parameter count is logged as `model.num_parameters`.
    """
    link = link if link is not None else TrialLink()
    started_at = time.time()  # the run's start and end are wall-clock times in MLflow: one clock for both
    target = resolve_resume(job.trainer.resume, Path(job.checkpoint.dir)) if job.trainer.resume else None
    if job.tracking.enabled and is_server(job.tracking.uri):
        check_server(job.tracking.uri, job.tracking.experiment)  # before the cluster is touched
    if target is not None:
        check_resume(job, target)
    # MLflow's import and the store's opening overlap Ray's start; the model is logged while Ray shuts down
    model_logged: Callable[[], None] = lambda: None
    with contextlib.ExitStack() as stack:
        locked: Optional[Path] = None
        if target is not None and not is_branch(target):  # before Ray starts: this command writes into its folder
            locked = target.checkpoint.parent
            stack.enter_context(holding(locked, f"resume from {target.checkpoint}"))
        store_opened = stack.enter_context(store_opened_early(job.tracking))
        console_log = stack.enter_context(captured(console))
        try:
            with connect(job.cluster) as cluster:
                plan = plan_job(job, cluster)
                name = f"orchestrator-{uuid.uuid4().hex[:12]}"
                # the workers' processes start (interpreter, Ray) while the run record opens
                first_group = RayWorkerGroup(plan, job, name).spawn()
                try:
                    store_opened()
                    sink = open_run(job, plan, overrides, target, console, hydra_dir, link, started_at)
                    sink.set_tags({RAY_NAME_TAG: name})
                    if components is not None:
                        sink.log_params({"model.num_parameters": str(components.num_parameters)})
                    checkpoint_dir = checkpoint_directory(job, sink.run_id, target, name)
                    if Path(checkpoint_dir) != locked:  # a new folder: a resume must not write in it meanwhile
                        stack.enter_context(holding(Path(checkpoint_dir), "train", required=False))
                    first_group.checkpoint_dir, first_group.run_id = checkpoint_dir, sink.run_id
                    unused = [first_group]
                    run_id = sink.run_id
                    controller = Controller(
                        lambda: unused.pop() if unused else RayWorkerGroup(plan, job, name, checkpoint_dir, run_id),
                        sink, console, failure_policy=job.failure, watch_hangs=job.entrypoint == "builtin",
                        startup_timeout_s=job.scaling.rendezvous_timeout_s,
                        resume_from=str(target.checkpoint) if target else None,
                        resumed_step=target.step if target else 0,
                        find_checkpoint=lambda: newest_checkpoint(Path(checkpoint_dir)),
                        observers=[*job_observers(job, sink, console, name), *link.observers(sink)],
                        stop_requests=link.stop_requests, entrypoint=job.entrypoint)
                    with _aborting_on_error(sink, console_log):
                        outcome = controller.run()
                finally:
                    first_group.shutdown()  # idempotent: the controller shut down the group it took
                model_logged = log_model_in_background(sink, job, outcome)
                if _model_without_example(job, outcome):
                    console.message("the trained model is not logged to MLflow: its inputs are unknown (items that "
                                    "are not (inputs, targets), for trainer.step_fn); its weights are in the last "
                                    "checkpoint")
            with _aborting_on_error(sink, console_log):
                record_results(sink, job, outcome, model_logged)
                ended_at = time.time()
                summary = JobSummary(outcome=outcome, run_id=sink.run_id,
                                     experiment_id=getattr(sink, "experiment_id", None),
                                     duration_s=ended_at - started_at, flush_s=getattr(sink, "flush_s", None))
                console_log.extend(line for line, _ in summary_lines(job, summary))
                finish_run(sink, outcome, console_log, end_time=ended_at)
        finally:
            # on an error before record_results the thread is still ours to join; its own error is secondary then
            with contextlib.suppress(Exception):
                model_logged()
    return summary


@contextlib.contextmanager
def _aborting_on_error(sink, console_log: ConsoleLog) -> Iterator[None]:
    """A job that raises ends its run as KILLED (Ctrl-C) or FAILED, keeping its console log."""
    try:
        yield
    except KeyboardInterrupt:
        _abort(sink, console_log, "KILLED", "interrupted by the user")
        raise
    except BaseException as error:
        _abort(sink, console_log, "FAILED", f"{type(error).__name__}: {error}")
        raise


def log_model_in_background(sink, job: JobConfig, outcome: JobOutcome) -> Callable[[], None]:
    """Start logging the trained model (if it is to be logged) on a thread; returns wait(), which re-raises its error.

    It needs no Ray, so the embedded instance shuts down meanwhile. Exporting the model (torch.export)
    and MLflow's requirement checks take seconds of one core, while shutting Ray down mostly waits for
    its processes to exit. wait() must be called on every path: it owns the thread.
    """
    result = outcome.result
    wanted = job.tracking.enabled and job.tracking.log_model and outcome.status == "FINISHED"
    if not (wanted and result is not None and result.model_state and result.input_example is not None):
        return lambda: None
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orchestrator-model-log")
    logged = executor.submit(sink.log_model, trained_model(job, result.model_state), result.input_example)
    executor.shutdown(wait=False)  # the submitted call still runs; wait() below joins it

    def wait() -> None:
        logged.result()

    return wait


def _model_without_example(job: JobConfig, outcome: JobOutcome) -> bool:
    result = outcome.result
    wanted = job.tracking.enabled and job.tracking.log_model and outcome.status == "FINISHED"
    return wanted and result is not None and bool(result.model_state) and result.input_example is None


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
    from orchestrator.train.checkpoint import saved_config

    resume = job.trainer.resume or ""
    problems = []
    saved = saved_config(target.checkpoint) if job.entrypoint == "builtin" else None
    if saved is not None:
        problems += identity_problems(resume, saved, model_data_identity(flat_params(job)))
    if job.tracking.enabled and target.run_id is not None and not is_branch(target):  # a branch opens a new run
        from orchestrator.tracking.run_recorder import RunRecorder

        found = RunRecorder.lookup(job.tracking, target.run_id)
        if found is not None and found[0] == "FINISHED" and not extends_finished_run(
                job.trainer.max_steps, job.trainer.max_epochs, target.step, found[1]):
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


def open_run(job: JobConfig, plan: JobPlan, overrides: Sequence[str], target: Optional[ResumeTarget], console,
             hydra_dir: Optional[str] = None, link: Optional[TrialLink] = None, started_at: Optional[float] = None):
    """The run to record into: the resumed one when its store has it, else a new one (a sweep's child)."""
    if job.tracking.enabled and target is not None and target.run_id is not None and not is_branch(target):
        from orchestrator.tracking.run_recorder import RunRecorder

        sink = RunRecorder.attach(job.tracking, target.run_id, notify=console.message,
                                  upload_checkpoints=job.checkpoint.upload, redactor=redactor_for(job, overrides))
        if sink is not None:
            _warn_config_changes(sink.logged_params(), flat_params(job), console)
            sink.set_tags({"orchestrator.resumed_from": str(target.checkpoint)})
            console.message(f"resuming MLflow run {target.run_id} from step {target.step} ({target.checkpoint})")
            return sink
    sink = open_sink(job, plan, overrides, notify=console.message, hydra_dir=hydra_dir, link=link,
                     started_at=started_at)
    if target is not None:
        sink.set_tags({"orchestrator.resumed_from": str(target.checkpoint)})
        console.message(f"resuming from step {target.step} ({target.checkpoint}) in a new run")
    return sink


def _warn_config_changes(logged: dict[str, str], current: dict[str, str], console) -> None:
    changed = [f"{key}: {logged[key]} -> {value}" for key, value in current.items()
               if key in logged and logged[key] != value and key != "trainer.resume"]
    if changed:
        console.message("warning: the resumed run was trained with a different config; exact continuation is "
                        "not guaranteed: " + "; ".join(changed))


def open_sink(job: JobConfig, plan: JobPlan, overrides: Sequence[str], notify=None, hydra_dir: Optional[str] = None,
              link: Optional[TrialLink] = None, started_at: Optional[float] = None):
    """The run's MLflow recorder with params, tags, the resolved config and Hydra's files; NullSink when off."""
    if not job.tracking.enabled:
        return NullSink()
    from orchestrator.tracking.run_recorder import RunRecorder

    tags = {
        "orchestrator.overrides": " ".join(overrides),  # the recorder redacts every tag
        "orchestrator.world_size": str(plan.world_size),
        "orchestrator.backend": plan.backend,
        "orchestrator.version": __version__,
        "mlflow.source.name": "orchestrator train",
    }
    commit = git_commit(Path.cwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
    link = link if link is not None else TrialLink()
    tags.update(link.tags)
    tracking = dataclasses.replace(job.tracking, run_name=link.run_name) if link.run_name else job.tracking
    sink = RunRecorder.create(tracking, flat_params(job), tags, parent_run_id=link.parent_run_id,
                              upload_checkpoints=job.checkpoint.upload, redactor=redactor_for(job, overrides),
                              start_time=started_at, **({"notify": notify} if notify else {}))
    try:
        sink.log_text(config_yaml(job), CONFIG_ARTIFACT)
        for path in hydra_files(hydra_dir):
            sink.log_text(path.read_text(), f"{HYDRA_ARTIFACT_DIR}/{path.name}")
    except BaseException as error:  # the recorder's writer thread is running: stop it on every path
        sink.finish("FAILED", error=f"{type(error).__name__}: {error}")
        raise
    return sink


def hydra_files(hydra_dir: Optional[str]) -> list[Path]:
    """The Hydra files of this command (config, hydra, overrides) in `hydra_dir`; none without it."""
    if hydra_dir is None or not Path(hydra_dir).is_dir():
        return []
    return sorted(path for path in Path(hydra_dir).iterdir() if path.is_file())


def workers_table(outcome: JobOutcome) -> list[dict]:
    """Where each rank ran in each attempt of the command (attempt 0 first), and the digest of its final
    parameters in the last attempt when it finished."""
    attempts = outcome.attempts or ((Attempt(outcome.restarts, outcome.workers),) if outcome.workers else ())
    return [
        {"attempt": attempt.number, "rank": spec.world_rank, "node_rank": spec.node_rank,
         "local_rank": spec.local_rank, "node_id": spec.node_id, "node_ip": spec.node_ip,
         "params_digest": outcome.rank_results[spec.world_rank].params_digest
         if attempt is attempts[-1] and spec.world_rank in outcome.rank_results else None}
        for attempt in attempts for spec in attempt.workers
    ]


def record_results(sink, job: JobConfig, outcome: JobOutcome, model_logged: Optional[Callable[[], None]] = None) -> None:
    """Wait (bounded) for the buffered metrics, then log where the ranks ran and the trained model.

    `model_logged` waits for a model already being logged by log_model_in_background; without it the
    model is logged here.
    """
    try:
        sink.flush()
        table = workers_table(outcome)
        if table:
            sink.log_text(json.dumps(table, indent=2), WORKERS_ARTIFACT)
    finally:
        if model_logged is not None:
            model_logged()
    if model_logged is None:
        log_model_in_background(sink, job, outcome)()


def finish_run(sink, outcome: JobOutcome, console_log: Optional[ConsoleLog] = None,
               end_time: Optional[float] = None) -> None:
    """Log the console log, then the run's final status and error."""
    if console_log is not None:
        sink.log_text(console_log.text(), CONSOLE_ARTIFACT)
    error = outcome.error
    if error and outcome.traceback:
        error = f"{error}\n\n{outcome.traceback}"
    sink.finish(outcome.status, error=error, end_time=end_time)


def record_outcome(sink, job: JobConfig, outcome: JobOutcome) -> None:
    """Metrics, model, final status and error of a job that reached an outcome (without a console log)."""
    record_results(sink, job, outcome)
    finish_run(sink, outcome)


def _abort(sink, console_log: ConsoleLog, status: str, error: str) -> None:
    """End the run of a job that raised: keep its console log if the store takes it, then the status."""
    # the job's own error is what propagates; a store that refuses the log now is reported by finish()
    with contextlib.suppress(Exception):
        sink.log_text(console_log.text(), CONSOLE_ARTIFACT)
    sink.finish(status, error=error)


def trained_model(job: JobConfig, model_state):
    """The configured architecture holding the trained weights rank 0 sent back."""
    from orchestrator.config.schema import TargetModelConfig

    if isinstance(job.model, TargetModelConfig):
        from orchestrator.train.components import build_target_model

        model = build_target_model(job.model)
    else:
        from orchestrator.config.load import data_input_shape, data_num_classes
        from orchestrator.train.models import build_model

        model = build_model(job.model, data_input_shape(job.data), data_num_classes(job.data))
    model.load_state_dict(model_state)
    return model.eval()
