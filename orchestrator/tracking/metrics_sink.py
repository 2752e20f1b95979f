"""Where a run's records go: the MetricsSink protocol and its null and in-memory twins."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Protocol


class MetricsSink(Protocol):
    """The run's single writer. Workers never see it: the driver feeds it what ranks report."""

    @property
    def run_id(self) -> Optional[str]:
        """The tracking run's id, or None where nothing is tracked."""

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp_s: Optional[float] = None) -> None:
        """Record scalar metrics at a global step, taken at `timestamp_s` (seconds since the epoch; None = now)."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add or overwrite run tags."""

    def log_params(self, params: Mapping[str, str]) -> None:
        """Add run params (a param, once logged, keeps its value)."""

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store `text` as an artifact file of the run."""

    def log_model(self, model: Any, input_example: Any) -> None:
        """Store the trained model so that it loads and serves."""

    def checkpoint_saved(self, path: str, step: int) -> None:
        """A complete checkpoint exists at `path` (the recorder may upload it)."""

    def flush(self) -> None:
        """Wait (bounded) until buffered metrics are written; the end of the run calls it before the model."""

    def finish(self, status: str, error: Optional[str] = None, end_time: Optional[float] = None) -> None:
        """End the run with FINISHED, FAILED or KILLED; a failed run carries its error. `end_time` (seconds since
        the epoch, default now) is the run's end: the job's summary states the duration up to it."""


class NullSink:
    """Tracking off: accepts everything, records nothing."""

    run_id: Optional[str] = None

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp_s: Optional[float] = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_params(self, params: Mapping[str, str]) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_model(self, model: Any, input_example: Any) -> None:
        pass

    def checkpoint_saved(self, path: str, step: int) -> None:
        pass

    def flush(self) -> None:
        pass

    def finish(self, status: str, error: Optional[str] = None, end_time: Optional[float] = None) -> None:
        pass


class InMemorySink:
    """Keeps every record in lists and dicts: the fake for controller and monitor tests."""

    def __init__(self, run_id: str = "in-memory"):
        self.run_id = run_id
        self.metrics: list[tuple[int, str, float]] = []
        self.tags: dict[str, str] = {}
        self.params: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.models: list[tuple[Any, Any]] = []
        self.checkpoints: list[tuple[int, str]] = []
        self.status: Optional[str] = None
        self.error: Optional[str] = None
        self.flushed = False

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp_s: Optional[float] = None) -> None:
        self.metrics.extend((step, key, float(value)) for key, value in metrics.items())

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)

    def log_params(self, params: Mapping[str, str]) -> None:
        self.params.update(params)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.texts[artifact_file] = text

    def log_model(self, model: Any, input_example: Any) -> None:
        self.models.append((model, input_example))

    def checkpoint_saved(self, path: str, step: int) -> None:
        self.checkpoints.append((step, path))

    def flush(self) -> None:
        self.flushed = True

    def finish(self, status: str, error: Optional[str] = None, end_time: Optional[float] = None) -> None:
        self.status, self.error, self.end_time = status, error, end_time

    def series(self, key: str) -> list[tuple[int, float]]:
        """(step, value) pairs recorded for one metric, in logging order."""
        return [(step, value) for step, name, value in self.metrics if name == key]
