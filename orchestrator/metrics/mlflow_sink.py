"""The run recorder: the run's single MLflow writer, through an explicit MlflowClient.

No fluent global run state is used except around `mlflow.pytorch.log_model`, which only offers the
fluent API; there the run is activated for the call alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from orchestrator.config.schema import TrackingConfig

MODEL_ARTIFACT = "model"
CONFIG_ARTIFACT = "config.yaml"
WORKERS_ARTIFACT = "workers.json"
ERROR_ARTIFACT = "error.txt"
ERROR_TAG = "orchestrator.error"


SQLITE_PREFIX = "sqlite:///"


def local_artifact_root(tracking_uri: str) -> Optional[str]:
    """For a SQLite store, the `mlartifacts` folder beside the database file; else None (server decides)."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    # sqlite:////abs/path.db names /abs/path.db; sqlite:///rel.db a path relative to the working directory
    database = Path(tracking_uri[len(SQLITE_PREFIX):]).resolve()
    return str(database.parent / "mlartifacts")


class RunRecorder:
    """Writes one MLflow run: params, tags, metrics, artifacts, model and final status."""

    def __init__(self, client: Any, run_id: str, experiment_id: str, tracking: TrackingConfig,
                 upload_checkpoints: bool = False):
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.tracking = tracking
        self.upload_checkpoints = upload_checkpoints

    @classmethod
    def create(cls, tracking: TrackingConfig, params: Mapping[str, str], tags: Mapping[str, str],
               upload_checkpoints: bool = False) -> "RunRecorder":
        """Create the run in `tracking.experiment` (creating the experiment when missing)."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking.uri)
        experiment_id = _experiment_id(client, tracking)
        run = client.create_run(experiment_id, run_name=tracking.run_name, tags=_limited_tags(tags))
        recorder = cls(client, run.info.run_id, experiment_id, tracking, upload_checkpoints)
        recorder.log_params(params)
        return recorder

    @classmethod
    def attach(cls, tracking: TrackingConfig, run_id: str, upload_checkpoints: bool = False) -> Optional["RunRecorder"]:
        """Reopen an existing run (status RUNNING again) to continue it; None if the store has no such run."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=tracking.uri)
        try:
            run = client.get_run(run_id)
        except MlflowException:
            return None
        client.update_run(run_id, status="RUNNING")
        return cls(client, run_id, run.info.experiment_id, tracking, upload_checkpoints)

    def logged_params(self) -> dict[str, str]:
        """The params the run already has (to compare a resumed job's config with)."""
        return dict(self.client.get_run(self.run_id).data.params)

    def checkpoint_saved(self, path: str, step: int) -> None:
        """With checkpoint.upload=true, store the checkpoint under the run's `checkpoints/` artifacts."""
        if self.upload_checkpoints:
            self.client.log_artifact(self.run_id, path, artifact_path="checkpoints")

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log params in batches, values cut to MLflow's length limit."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        items = [Param(key, _cut(str(value), MAX_PARAM_VAL_LENGTH)) for key, value in params.items()]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_PARAMS_TAGS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log all metrics of one step in a single request."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        batch = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add or overwrite run tags (values cut to MLflow's limit)."""
        from mlflow.entities import RunTag

        batch = [RunTag(key, value) for key, value in _limited_tags(tags).items()]
        self.client.log_batch(self.run_id, tags=batch)

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store `text` as a run artifact."""
        self.client.log_text(self.run_id, text, artifact_file)

    def log_model(self, model: Any, input_example: Any) -> None:
        """Log the model under the name `model` with its signature and input example."""
        import mlflow
        import numpy as np
        import torch
        from mlflow.models import infer_signature

        model.eval()
        input_example = np.array(input_example)  # Ray hands arrays over read-only; torch wants to own a copy
        with torch.no_grad():
            output = model(torch.from_numpy(input_example)).numpy()
        with _active_run(self.tracking.uri, self.run_id):
            mlflow.pytorch.log_model(
                model,
                name=MODEL_ARTIFACT,
                input_example=input_example,
                signature=infer_signature(input_example, output),
                serialization_format=self.tracking.model_format,
                # explicit requirements: inferring them costs ~10 s of subprocesses on a small machine
                pip_requirements=_model_requirements(),
            )

    def finish(self, status: str, error: Optional[str] = None) -> None:
        """Set the final status; a failed or killed run carries its error as a tag and an artifact."""
        if error:
            self.set_tags({ERROR_TAG: error})
            self.log_text(error, ERROR_ARTIFACT)
        self.client.set_terminated(self.run_id, status=status)


def _experiment_id(client: Any, tracking: TrackingConfig) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(tracking.experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(tracking.experiment, artifact_location=local_artifact_root(tracking.uri))
    except MlflowException:  # another process created it first
        found = client.get_experiment_by_name(tracking.experiment)
        if found is None:
            raise
        return found.experiment_id


def _limited_tags(tags: Mapping[str, str]) -> dict[str, str]:
    from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

    return {key: _cut(str(value), MAX_TAG_VAL_LENGTH) for key, value in tags.items()}


def _cut(text: str, limit: int) -> str:
    marker = "...[truncated]"
    return text if len(text) <= limit else text[:limit - len(marker)] + marker


def _model_requirements() -> list[str]:
    import cloudpickle
    import mlflow
    import torch

    torch_version = torch.__version__.split("+")[0]  # a local tag such as +cpu is not on PyPI
    return [f"mlflow=={mlflow.__version__}", f"torch=={torch_version}", f"cloudpickle=={cloudpickle.__version__}"]


# MLflow's fluent API keeps one process-wide tracking URI and run stack; runs recorded from several
# threads (a sweep's trials) take turns while they hold it.
_FLUENT_LOCK = threading.Lock()


@contextlib.contextmanager
def _active_run(tracking_uri: str, run_id: str) -> Iterator[None]:
    import mlflow

    with _FLUENT_LOCK:
        # set_tracking_uri also writes MLFLOW_TRACKING_URI; restoring the variable's previous value
        # (None unsets both) leaves the process environment as it was
        previous = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(tracking_uri)
        try:
            mlflow.start_run(run_id=run_id)
            try:
                yield
            finally:
                # the caller sets the real final status right after; this only pops the fluent run
                mlflow.end_run()
        finally:
            mlflow.set_tracking_uri(previous)
