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

from launchers.monitoring import job_observers
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
    with connect(job.cluster) as cluster:
        plan = plan_job(job, cluster)
        sink = open_sink(job, plan, overrides)
        name = f"orchestrator-{sink.run_id or uuid.uuid4().hex[:12]}"
        checkpoint_dir = str(Path(job.checkpoint.dir) / (sink.run_id or name))
        controller = Controller(lambda: RayWorkerGroup(plan, job, name, checkpoint_dir), sink, console,
                                observers=job_observers(job, sink, console, name))
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
    sink = RunRecorder.create(job.tracking, flat_params(job), tags)
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
