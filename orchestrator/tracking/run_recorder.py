"""The run recorder: the run's single MLflow writer, through an explicit MlflowClient and run id.

Metrics go through a MetricWriter (a background thread sending batches), so the driver loop never
waits on the store. Everything else (params, tags, artifacts, the model, the final status) is written
synchronously at the start and the end of the run. Writes to a SQLite store go through a StoreGuard,
so several runs or processes on one file take turns. Every param, tag, text artifact, error and run
name passes through the recorder's Redactor on its way to the store (`redact.py`): secret-looking keys
never reach it, and the job's secret values and credential shapes are masked wherever they occur.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from orchestrator import redaction as redact
from orchestrator.config.schema import TrackingConfig
from orchestrator.thread_priority import lower_thread_priority
from orchestrator.tracking.metric_writer import MetricValue, MetricWriter, WriterReport
from orchestrator.tracking.model_log import MODEL_ARTIFACT, log_pytorch_model
from orchestrator.tracking.store_guard import StoreGuard, is_transient, sqlite_path
from orchestrator.tracking.transport import http_sender, is_server, server_answers, store_sender

CONFIG_ARTIFACT = "config.yaml"
WORKERS_ARTIFACT = "workers.json"
CHECKPOINT_ARTIFACT_DIR = "checkpoints"
HYDRA_ARTIFACT_DIR = ".hydra"
ERROR_ARTIFACT = "error.txt"
ERROR_TAG = "orchestrator.error"
PARENT_TAG = "mlflow.parentRunId"
__all__ = [
    "RunRecorder",
    "MODEL_ARTIFACT",
    "CONFIG_ARTIFACT",
    "WORKERS_ARTIFACT",
    "CHECKPOINT_ARTIFACT_DIR",
    "HYDRA_ARTIFACT_DIR",
    "ERROR_ARTIFACT",
    "ERROR_TAG",
    "PARENT_TAG",
]

Notify = Callable[[str], None]


def _print_notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def local_artifact_root(tracking_uri: str) -> Optional[str]:
    """For a SQLite store, the `mlartifacts` folder beside the database file; else None (server decides)."""
    database = sqlite_path(tracking_uri)
    return None if database is None else str(database.parent / "mlartifacts")


class RunRecorder:
    """Writes one MLflow run: params, tags, metrics, artifacts, model and final status."""

    def __init__(
        self,
        client: Any,
        run_id: str,
        experiment_id: str,
        tracking: TrackingConfig,
        guard: StoreGuard,
        notify: Notify = _print_notice,
        upload_checkpoints: bool = False,
        redactor: redact.Redactor = redact.Redactor(),
    ):
        self.client = client
        self.redactor = redactor
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.tracking = tracking
        self.guard = guard
        self.notify = notify
        self.upload_checkpoints = upload_checkpoints
        self.existing: set[str] = set()
        """Artifacts an earlier command left in this run (a resumed run): never written over."""
        self.session = 1
        """Which command this is to write into the run: 1 for the one that created it, then 2, 3, ..."""
        self.background: Optional[ThreadPoolExecutor] = None
        """Tag writes and checkpoint uploads during the run, in order, off the caller's thread."""
        self.writer: Optional[MetricWriter] = None
        self.flush_deadline: Optional[float] = None
        self.flush_s: Optional[float] = None
        """How long the final flush of buffered metrics took (None before it)."""
        self.report: Optional[WriterReport] = None

    @classmethod
    def create(
        cls,
        tracking: TrackingConfig,
        params: Mapping[str, str],
        tags: Mapping[str, str],
        parent_run_id: Optional[str] = None,
        notify: Notify = _print_notice,
        upload_checkpoints: bool = False,
        redactor: redact.Redactor = redact.Redactor(),
        start_time: Optional[float] = None,
    ) -> "RunRecorder":
        """Create the run in `tracking.experiment` (created when missing), as a child of `parent_run_id` if given.

        `redactor` knows the job's secret values (Redactor.of its config and command line). `start_time`
        (seconds since the epoch, default now) is when the job started, before the cluster was reached.
        """
        client, guard = _open_store(tracking.uri)
        experiment_id = guard.call(lambda: _experiment_id(client, tracking))
        tags = dict(tags, **({PARENT_TAG: parent_run_id} if parent_run_id else {}))
        run_name = None if tracking.run_name is None else redactor.value(tracking.run_name)
        start_ms = None if start_time is None else int(start_time * 1000)
        run = guard.call(
            lambda: client.create_run(
                experiment_id, run_name=run_name, start_time=start_ms, tags=_limited_tags(redactor.items(tags))
            )
        )
        recorder = cls(client, run.info.run_id, experiment_id, tracking, guard, notify, upload_checkpoints, redactor)
        recorder.log_params(params)
        return recorder.start()

    @classmethod
    def attach(
        cls,
        tracking: TrackingConfig,
        run_id: str,
        notify: Notify = _print_notice,
        upload_checkpoints: bool = False,
        redactor: redact.Redactor = redact.Redactor(),
    ) -> Optional["RunRecorder"]:
        """Continue an existing run (a resumed job): marked RUNNING again; None if the store has no such run."""
        from mlflow.exceptions import MlflowException

        client, guard = _open_store(tracking.uri)
        try:
            run = guard.call(lambda: client.get_run(run_id))
        except MlflowException:
            return None
        guard.call(lambda: client.update_run(run_id, status="RUNNING"))
        recorder = cls(client, run_id, run.info.experiment_id, tracking, guard, notify, upload_checkpoints, redactor)
        recorder.existing = guard.call(lambda: _artifact_files(client, run_id))
        recorder.session = int(run.data.tags.get(SESSION_TAG, "1")) + 1
        guard.call(lambda: client.set_tag(run_id, SESSION_TAG, str(recorder.session)))
        return recorder.start()

    @staticmethod
    def lookup(tracking: TrackingConfig, run_id: str) -> Optional[tuple[str, dict[str, str]]]:
        """(status, params) of a run in the store, or None if the store has no such run; changes nothing."""
        from mlflow.exceptions import MlflowException

        client, guard = _open_store(tracking.uri)
        try:
            run = guard.call(lambda: client.get_run(run_id))
        except MlflowException:
            return None
        return run.info.status, dict(run.data.params)

    def logged_params(self) -> dict[str, str]:
        """The params the run already has (to compare a resumed job's config with)."""
        return dict(self.guard.call(lambda: self.client.get_run(self.run_id)).data.params)

    def checkpoint_saved(self, path: str, step: int) -> None:
        """With checkpoint.upload=true, copy the checkpoint to the run's `checkpoints/` artifacts.

        Uploads run one at a time on the recorder's own thread, so a large file never stalls the driver;
        `finish()` waits for the last one.
        """
        if self.upload_checkpoints:
            self._in_background(self._upload, path)

    def _in_background(self, call: Callable[..., None], *args: Any) -> None:
        if self.background is None:
            self.background = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="orchestrator-mlflow-io", initializer=lower_thread_priority
            )
        self.background.submit(call, *args)

    def _upload(self, path: str) -> None:
        try:
            if Path(path).is_dir():  # a sharded checkpoint: its folder, under its own name
                where = f"{CHECKPOINT_ARTIFACT_DIR}/{Path(path).name}"
                self.guard.call(lambda: self.client.log_artifacts(self.run_id, path, where))
            else:
                self.guard.call(lambda: self.client.log_artifact(self.run_id, path, CHECKPOINT_ARTIFACT_DIR))
        except Exception as error:  # the run goes on; the checkpoint is still on disk
            self.notify(f"MLflow: checkpoint {path} was not uploaded: {type(error).__name__}: {error}")

    def start(self) -> "RunRecorder":
        """Start the metric writer's thread; `finish()` stops it."""
        uri = self.tracking.uri
        send = http_sender(uri, self.run_id) if is_server(uri) else store_sender(self.client, self.run_id, self.guard)
        self.writer = MetricWriter(send, self.tracking.max_outage_s, is_transient).start()
        return self

    def log_params(self, params: Mapping[str, str]) -> None:
        """Log params in batches, secret-looking keys left out, values cut to MLflow's length limit."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        safe = self.redactor.items(params)
        items = [Param(key, _cut(value, MAX_PARAM_VAL_LENGTH)) for key, value in safe.items()]
        for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            batch = items[start : start + MAX_PARAMS_TAGS_PER_BATCH]
            self.guard.call(lambda: self.client.log_batch(self.run_id, params=batch))

    def log_metrics(self, metrics: Mapping[str, float], step: int, timestamp_s: Optional[float] = None) -> None:
        """Buffer one step's metrics for the background writer; returns at once unless the buffer is full."""
        timestamp_ms = int((time.time() if timestamp_s is None else timestamp_s) * 1000)
        self._started_writer().put(
            [MetricValue(key, float(value), timestamp_ms, step) for key, value in metrics.items()]
        )
        self._announce()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Add or overwrite run tags (secret-looking keys left out, values cut to MLflow's limit).

        Once the metric writer runs, tags are written on the recorder's background thread: the
        controller and the monitors set tags during training, and a tracking server that is down
        must not stall them for MLflow's minutes of retries. `finish()` waits for them.
        """
        if self.writer is None:
            self._write_tags(tags)
        else:
            self._in_background(self._write_tags_or_notify, dict(tags))

    def _write_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(key, value) for key, value in _limited_tags(self.redactor.items(tags)).items()]
        self.guard.call(lambda: self.client.log_batch(self.run_id, tags=batch))

    def _write_tags_or_notify(self, tags: Mapping[str, str]) -> None:
        try:
            self._write_tags(tags)
        except Exception as error:  # the run goes on without these tags; say which
            self.notify(f"MLflow: tags {', '.join(sorted(tags))} were not recorded: {type(error).__name__}: {error}")

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store `text` as a run artifact, with credentials and secret-named values masked.

        While the run is on, the write happens on the background thread, after the buffered metrics
        reach the store (so during an outage it waits, up to `tracking.flush_timeout_s`, for the server
        to come back instead of being skipped); `finish()` waits for it.
        """
        if self.writer is None or self.report is not None:
            self._write_text(text, artifact_file)
        else:
            self._in_background(self._write_text_when_up, text, artifact_file)

    def _write_text(self, text: str, artifact_file: str) -> None:
        if self._store_down(f"the artifact {artifact_file}"):
            return
        name = session_name(artifact_file, self.session) if artifact_file in self.existing else artifact_file
        self.guard.call(lambda: self.client.log_text(self.run_id, self.redactor.text(text), name))
        self.existing.add(name)

    def _write_text_when_up(self, text: str, artifact_file: str) -> None:
        writer = self._started_writer()
        if not writer.reachable:
            writer.flush(self.tracking.flush_timeout_s)
        try:
            self._write_text(text, artifact_file)
        except Exception as error:  # the run goes on without this artifact; say so
            self.notify(f"MLflow: the artifact {artifact_file} was not recorded: {type(error).__name__}: {error}")

    def log_model(self, model: Any, input_example: Any) -> None:
        """Log the model under the name `model` with its signature and input example."""
        if self._store_down("the model"):
            return
        self.guard.attempt(
            lambda: log_pytorch_model(self.tracking.uri, self.run_id, model, input_example, self.tracking.model_format)
        )

    def flush(self) -> None:
        """Wait until buffered metrics are written, at most `tracking.flush_timeout_s` for the whole run."""
        started = time.monotonic()
        if self.flush_deadline is None:
            self.flush_deadline = started + self.tracking.flush_timeout_s
        self._started_writer().flush(max(self.flush_deadline - started, 0.0))
        self.flush_s = time.monotonic() - started
        self._announce()

    def finish(self, status: str, error: Optional[str] = None, end_time: Optional[float] = None) -> None:
        """Stop the writer (bounded), then set the final status; a failed run carries its error.

        `end_time` (seconds since the epoch, default now) is the run's end as the job's summary states it.
        """
        report = self._close_writer()
        if self.background is not None:
            # with the server gone, queued tags and uploads would each wait out MLflow's retries
            self.background.shutdown(wait=True, cancel_futures=not self._started_writer().reachable)
            self.background = None
        if report.dropped.total:
            self.notify(f"MLflow: {report.dropped.total} metric values were not recorded ({report.dropped.describe()})")
        if self._store_down(f"the final status {status}"):
            return
        if error:
            self._write_tags({ERROR_TAG: self.redactor.text(error)})
            self._write_text(error, ERROR_ARTIFACT)
        end_ms = None if end_time is None else int(end_time * 1000)
        self.guard.call(lambda: self.client.set_terminated(self.run_id, status=status, end_time=end_ms))

    def _close_writer(self) -> WriterReport:
        if self.report is None:
            now = time.monotonic()
            deadline = self.flush_deadline if self.flush_deadline is not None else now + self.tracking.flush_timeout_s
            self.report = self._started_writer().close(max(deadline - now, 0.0))
            self._announce()
        return self.report

    def _store_down(self, what: str) -> bool:
        """True (and said on the console) when metric writes are failing and the server does not answer now.

        Skipping then keeps the end of the run from hanging in MlflowClient's minutes of retries.
        """
        # before start() no metric write has failed: nothing says the store is down
        if (
            self.writer is None
            or self.writer.reachable
            or not is_server(self.tracking.uri)
            or server_answers(self.tracking.uri)
        ):
            return False
        self.notify(f"MLflow: the tracking server does not answer; {what} of run {self.run_id} is not recorded")
        return True

    def _announce(self) -> None:
        for notice in self._started_writer().notices():
            self.notify(notice)

    def _started_writer(self) -> MetricWriter:
        """The metric writer that start() made (create() and attach() return started recorders)."""
        if self.writer is None:
            raise RuntimeError("the run recorder is not started: call start() before recording metrics")
        return self.writer


@contextlib.contextmanager
def store_opened_early(tracking: TrackingConfig) -> Iterator[Callable[[], None]]:
    """Import MLflow and open the tracking store on a thread of its own while the caller does other work.

    Importing MLflow and opening a SQLite store (SQLAlchemy's engine, the schema check) take seconds
    that would otherwise come before the workers start; MLflow keeps the engine, so the run's recorder
    then opens the store at once. Only a store that already exists is opened (a SQLite file that is
    there, or a tracking server, which check_server found answering): opening creates a missing store,
    and a job that fails its planning must leave none behind. Yields `wait()`, which returns once the
    thread is done; leaving the block waits too. Errors are left to the recorder, which opens the store
    again and reports them.
    """
    if not tracking.enabled:
        yield lambda: None
        return

    def open_quietly() -> None:
        with contextlib.suppress(Exception):
            import mlflow  # noqa: F401  (most of the time: the import)

            database = sqlite_path(tracking.uri)
            if is_server(tracking.uri) or (database is not None and database.is_file()):
                _open_store(tracking.uri)

    thread = threading.Thread(target=open_quietly, name="orchestrator-store-opener", daemon=True)
    thread.start()
    try:
        yield thread.join
    finally:
        thread.join()


def _open_store(tracking_uri: str) -> tuple[Any, StoreGuard]:
    """A client and the store's guard; the client is made under the guard, since making one opens (and on
    first use migrates) a SQLite database."""
    from mlflow import MlflowClient

    guard = StoreGuard.for_uri(tracking_uri)
    return guard.call(lambda: MlflowClient(tracking_uri=tracking_uri)), guard


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
    return text if len(text) <= limit else text[: limit - len(marker)] + marker


SESSION_TAG = "orchestrator.sessions"
"""How many commands have written into the run (a resumed run: 2 and more)."""


def session_name(artifact_file: str, session: int) -> str:
    """The name a later command gives an artifact the run already has: console.log -> console.2.log."""
    folder, _, name = artifact_file.rpartition("/")
    stem, dot, suffix = name.partition(".")
    renamed = f"{stem}.{session}{dot}{suffix}" if dot else f"{name}.{session}"
    return f"{folder}/{renamed}" if folder else renamed


def _artifact_files(client: Any, run_id: str, path: Optional[str] = None, depth: int = 3) -> set[str]:
    """The run's artifact files (paths relative to its artifact root), a few folders deep."""
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            if depth > 1:
                found |= _artifact_files(client, run_id, info.path, depth - 1)
        else:
            found.add(info.path)
    return found
