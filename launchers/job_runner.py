"""One job end to end: connect, plan, open the run record, run the controller, record the outcome."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from orchestrator import __version__
from orchestrator.config.export import config_yaml, flat_params
from orchestrator.config.schema import JobConfig
from orchestrator.controller import Controller, JobOutcome
from orchestrator.metrics.mlflow_sink import CONFIG_ARTIFACT, WORKERS_ARTIFACT
from orchestrator.metrics.sink import NullSink
from orchestrator.plan import JobPlan, plan_job
from orchestrator.provenance import git_commit
from orchestrator.resume import ResumeTarget, resolve_resume
from orchestrator.train.checkpoint import checkpoint_step, latest_checkpoint

from launchers.ray_cluster import connect
from launchers.ray_launcher import RayWorkerGroup


@dataclass(frozen=True)
class JobSummary:
    """What the command prints at the end: the outcome and where the run is recorded."""

    outcome: JobOutcome
    run_id: Optional[str]
    experiment_id: Optional[str]
    duration_s: float


def run_job(job: JobConfig, console, overrides: Sequence[str] = ()) -> JobSummary:
    """Run a validated job on its cluster; PlanError is raised before any actor starts."""
    started = time.monotonic()
    target = resolve_resume(job.trainer.resume, Path(job.checkpoint.dir)) if job.trainer.resume else None
    with connect(job.cluster) as cluster:
        plan = plan_job(job, cluster)
        sink = open_run(job, plan, overrides, target, console)
        name = f"orchestrator-{(sink.run_id or '')[:12]}-{uuid.uuid4().hex[:8]}".replace("--", "-")
        checkpoint_dir = checkpoint_directory(job, sink.run_id, target, name)
        controller = Controller(lambda: RayWorkerGroup(plan, job, name, checkpoint_dir), sink, console,
                                failure_policy=job.failure, watch_hangs=job.entrypoint == "builtin",
                                resume_from=str(target.checkpoint) if target else None,
                                resumed_step=target.step if target else 0,
                                find_checkpoint=lambda: newest_checkpoint(Path(checkpoint_dir)))
        try:
            outcome = controller.run()
            record_outcome(sink, job, outcome)
        except KeyboardInterrupt:
            sink.finish("KILLED", error="interrupted by the user")
            raise
        except BaseException as error:
            sink.finish("FAILED", error=f"{type(error).__name__}: {error}")
            raise
    return JobSummary(outcome=outcome, run_id=sink.run_id, experiment_id=getattr(sink, "experiment_id", None),
                      duration_s=time.monotonic() - started)


def newest_checkpoint(directory: Path) -> Optional[tuple[str, int]]:
    """The newest complete checkpoint of the job and its step (None if none, or the folder is not visible here)."""
    path = latest_checkpoint(directory)
    return (str(path), checkpoint_step(path)) if path is not None else None


def checkpoint_directory(job: JobConfig, run_id: Optional[str], target: Optional[ResumeTarget], name: str) -> str:
    """Where the job's checkpoints go: its run's folder (a resumed run keeps writing into its own)."""
    if target is not None and (run_id is None or target.checkpoint.parent.name == run_id):
        return str(target.checkpoint.parent)
    return str(Path(job.checkpoint.dir) / (run_id or name))


def open_run(job: JobConfig, plan: JobPlan, overrides: Sequence[str], target: Optional[ResumeTarget], console):
    """The run to record into: the resumed one when its store has it, else a new one."""
    if job.tracking.enabled and target is not None and target.run_id is not None:
        from orchestrator.metrics.mlflow_sink import RunRecorder

        sink = RunRecorder.attach(job.tracking, target.run_id, upload_checkpoints=job.checkpoint.upload)
        if sink is not None:
            _warn_config_changes(sink.logged_params(), flat_params(job), console)
            sink.set_tags({"orchestrator.resumed_from": str(target.checkpoint)})
            console.message(f"resuming MLflow run {target.run_id} from step {target.step} ({target.checkpoint})")
            return sink
    sink = open_sink(job, plan, overrides)
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


def open_sink(job: JobConfig, plan: JobPlan, overrides: Sequence[str]):
    """The run's MLflow recorder with params, tags and the resolved config; NullSink when tracking is off."""
    if not job.tracking.enabled:
        return NullSink()
    from orchestrator.metrics.mlflow_sink import RunRecorder

    tags = {
        "orchestrator.overrides": " ".join(overrides),
        "orchestrator.world_size": str(plan.world_size),
        "orchestrator.backend": plan.backend,
        "orchestrator.version": __version__,
        "mlflow.source.name": "orchestrator train",
    }
    commit = git_commit(Path.cwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
    sink = RunRecorder.create(job.tracking, flat_params(job), tags, upload_checkpoints=job.checkpoint.upload)
    sink.log_text(config_yaml(job), CONFIG_ARTIFACT)
    return sink


def workers_table(outcome: JobOutcome) -> list[dict]:
    """Where each rank ran, and the digest of its final parameters when it finished."""
    return [
        {"rank": spec.world_rank, "node_rank": spec.node_rank, "local_rank": spec.local_rank,
         "node_id": spec.node_id, "node_ip": spec.node_ip,
         "params_digest": outcome.rank_results[spec.world_rank].params_digest
         if spec.world_rank in outcome.rank_results else None}
        for spec in outcome.workers
    ]


def record_outcome(sink, job: JobConfig, outcome: JobOutcome) -> None:
    """Log where the ranks ran and the trained model of a finished job, then the final status and error."""
    if outcome.workers:
        sink.log_text(json.dumps(workers_table(outcome), indent=2), WORKERS_ARTIFACT)
    result = outcome.result
    if outcome.status == "FINISHED" and job.tracking.log_model and result is not None and result.model_state:
        sink.log_model(trained_model(job, result.model_state), result.input_example)
    error = outcome.error
    if error and outcome.traceback:
        error = f"{error}\n\n{outcome.traceback}"
    sink.finish(outcome.status, error=error)


def trained_model(job: JobConfig, model_state):
    """The configured architecture holding the trained weights rank 0 sent back."""
    from orchestrator.config.load import data_input_shape, data_num_classes
    from orchestrator.train.models import build_model

    model = build_model(job.model, data_input_shape(job.data), data_num_classes(job.data))
    model.load_state_dict(model_state)
    return model.eval()
