"""Logging the trained model: the one place MLflow's fluent run state is used.

`mlflow.pytorch.log_model` only offers the fluent API; the run is activated for that call alone,
under a process-wide lock.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any, Iterator

MODEL_ARTIFACT = "model"


def log_pytorch_model(tracking_uri: str, run_id: str, model: Any, input_example: Any, model_format: str) -> None:
    """Log `model` to the run under the name `model`, with its signature and input example."""
    import mlflow
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    model.eval()
    input_example = np.array(input_example)  # Ray hands arrays over read-only; torch wants to own a copy
    with torch.no_grad():
        output = model(torch.from_numpy(input_example)).numpy()
    with _active_run(tracking_uri, run_id):
        mlflow.pytorch.log_model(
            model,
            name=MODEL_ARTIFACT,
            input_example=input_example,
            signature=infer_signature(input_example, output),
            serialization_format=model_format,
            # explicit requirements: inferring them costs ~10 s of subprocesses on a small machine
            pip_requirements=_model_requirements(),
        )


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
            # None resets the URI and unsets the variable (MLflow's code does so; its annotation says str only)
            mlflow.set_tracking_uri(previous)  # type: ignore[arg-type]
