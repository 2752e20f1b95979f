"""What an export is checked against: the logged model, its input example, and a batch of evaluation data.

The eager model is the logged model loaded back in PyTorch (a pt2 model: its torch.export program run as
a module; a pickled one: the trained nn.Module). The evaluation batch is rebuilt from the run's data config:
its `orchestrator.overrides` tag composed again, as `orchestrator train` composed it.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

OVERRIDES_TAG = "orchestrator.overrides"
EVAL_ROWS = 64
"""Rows of the evaluation batch: enough to differ from the input example's batch size (the dynamic axis)."""


@dataclass(frozen=True)
class CheckInputs:
    """The inputs an export is checked on."""

    input_example: np.ndarray
    eval_batch: Optional[np.ndarray]
    eval_note: str
    """Where the evaluation batch came from, or why there is none."""


def load_logged_model(tracking_uri: str, artifact_uri: str, folder: Path) -> tuple[Any, np.ndarray]:
    """Download the model's files at `artifact_uri` into `folder`; returns (eager model, its input example)."""
    import mlflow.artifacts
    import mlflow.pytorch
    from mlflow.models import Model

    from orchestrator.registry.store import no_progress_bar

    with no_progress_bar():
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(folder), tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
    model = mlflow.pytorch.load_model(local)
    # a pickled nn.Module goes to eval mode; a pt2 program was traced in it and refuses eval() ("not supported")
    with contextlib.suppress(NotImplementedError):
        model.eval()
    example = Model.load(local).load_input_example(local)
    if example is None:
        from orchestrator.export.requirements import ExportError

        raise ExportError(f"the model at {artifact_uri} has no input example: the export is traced and checked on it")
    return model, np.array(example)


def check_inputs(run_tags: dict[str, str], input_example: np.ndarray, rows: int = EVAL_ROWS) -> CheckInputs:
    """The input example and, when the run's config can be composed again, its first `rows` evaluation inputs."""
    overrides_text = run_tags.get(OVERRIDES_TAG)
    if overrides_text is None:
        return CheckInputs(input_example, None, f"no evaluation batch: the run has no {OVERRIDES_TAG} tag")
    try:
        batch = _eval_batch(shlex.split(overrides_text), rows)
    except Exception as error:  # a config that no longer composes here: check on the input example alone
        return CheckInputs(input_example, None, f"no evaluation batch: the run's config did not compose here ({error})")
    if batch is None:
        return CheckInputs(input_example, None, "no evaluation batch: the run's data set has no inputs to take")
    return CheckInputs(input_example, batch.astype(input_example.dtype, copy=False), "the run's evaluation data")


def _eval_batch(overrides: list[str], rows: int) -> Optional[np.ndarray]:
    from orchestrator.config.compose import compose_job
    from orchestrator.config.schema import TargetDataConfig

    job = compose_job(overrides, Path.cwd())
    if isinstance(job.data, TargetDataConfig):
        from orchestrator.train.components import build_target_data
        from orchestrator.train.loader import first_inputs

        train, evaluation = build_target_data(job.data)
        inputs = first_inputs(evaluation if evaluation is not None else train, rows)
        return None if inputs is None else np.asarray(inputs)
    from orchestrator.train.data import load_dataset

    return load_dataset(job.data, job.trainer.seed).test_x[:rows].numpy()
