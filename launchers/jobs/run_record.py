"""The job's MLflow run from its opening to its end.

The run is created (or the resumed one attached) once the plan is known, captures the console, ends
as FAILED or KILLED when the job raises, and otherwise finishes with the job's status; the trained
model is logged on a thread while Ray shuts down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, Sequence

from orchestrator import __version__
from orchestrator.cli.job_summary import JobSummary, summary_lines
from orchestrator.config.export import config_yaml, flat_params, redactor_for
from orchestrator.config.schema import JobConfig
from orchestrator.lifecycle.controller import USER_STOP, Attempt, JobOutcome
from orchestrator.lifecycle.resume import ResumeTarget
from orchestrator.planning.plan import JobPlan
from orchestrator.tracking.console_log import CONSOLE_ARTIFACT, ConsoleLog, captured
from orchestrator.tracking.metrics_sink import NullSink
from orchestrator.tracking.provenance import git_commit
from orchestrator.tracking.run_recorder import CONFIG_ARTIFACT, HYDRA_ARTIFACT_DIR, WORKERS_ARTIFACT, store_opened_early


class RunLink(Protocol):
    """Where the run sits among others: a sweep's trial is a named child of the sweep's run, with tags of its own."""

    @property
    def parent_run_id(self) -> Optional[str]:
        """The parent run (mlflow.parentRunId), or None."""

    @property
    def run_name(self) -> Optional[str]:
        """The run's name instead of tracking.run_name, or None."""

    @property
    def tags(self) -> Mapping[str, str]:
        """Tags added to the run."""


class RunRecord:
    """The job's run (its sink: a NullSink without tracking) as a context manager, from `open` to `finish`.

    Entering starts opening the store on a thread (the caller starts Ray meanwhile) and captures the
    console. An error that leaves the block after `open` and before `finish` ends the run as KILLED
    (Ctrl-C) or FAILED with its console log; leaving always waits for the model being logged.
    """

    def __init__(
        self,
        job: JobConfig,
        console,
        overrides: Sequence[str],
        link: RunLink,
        *,
        hydra_dir: Optional[str] = None,
        started_at: Optional[float] = None,
    ):
        self.job = job
        self.console = console
        self.overrides = overrides
        self.link = link
        self.hydra_dir = hydra_dir  # this command's Hydra files: logged with a new run
        self.started_at = time.time() if started_at is None else started_at  # MLflow's times are wall-clock
        self.sink: Any = None
        self.console_log = ConsoleLog()
        self._ends = contextlib.ExitStack()
        self._store_opened: Callable[[], None] = lambda: None
        self._model_logged: Callable[[], None] = lambda: None
        self._ended = False

    def __enter__(self) -> "RunRecord":
        with contextlib.ExitStack() as stack:
            self._store_opened = stack.enter_context(store_opened_early(self.job.tracking))
            self.console_log = stack.enter_context(captured(self.console))
            self._ends = stack.pop_all()
        return self

    def __exit__(
        self, kind: Optional[type], error: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> None:
        try:
            if error is not None:
                self._abort(error)
        finally:
            # on an error before `finish` the thread is still ours to join; its own error is secondary then
            with contextlib.suppress(Exception):
                self._model_logged()
            self._ends.close()

    def open(self, plan: JobPlan, target: Optional[ResumeTarget], continues: bool) -> Any:
        """Open the run and return its sink: the resumed run when `continues` it and its store has it, else a new one.

        `continues`: the resume goes on in its checkpoint's run (it is no branch from an older checkpoint).
        """
        self._store_opened()
        attached = self._attach(target) if continues and target is not None else None
        self.sink = attached if attached is not None else self._create(plan, target)
        return self.sink

    @contextlib.contextmanager
    def aborting(self) -> Iterator[None]:
        """End the run at once if the block raises (before what unwinds after it: Ray's shutdown)."""
        try:
            yield
        except BaseException as error:
            self._abort(error)
            raise

    def log_model(self, outcome: JobOutcome) -> None:
        """Start logging the trained model (if it is to be logged) on a thread, or say why it cannot be."""
        self._model_logged = log_model_in_background(self.sink, self.job, outcome)
        if _model_without_example(self.job, outcome):
            self.console.message(
                "the trained model is not logged to MLflow: its inputs are unknown (items that "
                "are not (inputs, targets), for trainer.step_fn); its weights are in the last "
                "checkpoint"
            )

    def finish(self, outcome: JobOutcome) -> JobSummary:
        """Record the outcome: the buffered metrics, where the ranks ran, the model, the console log, the status."""
        with self.aborting():
            record_results(self.sink, self.job, outcome, self._model_logged)
            ended_at = time.time()
            summary = JobSummary(
                outcome=outcome,
                run_id=self.sink.run_id,
                experiment_id=getattr(self.sink, "experiment_id", None),
                duration_s=ended_at - self.started_at,
                flush_s=getattr(self.sink, "flush_s", None),
            )
            self.console_log.extend(line for line, _ in summary_lines(self.job, summary))
            finish_run(self.sink, outcome, self.console_log, end_time=ended_at)
            self._ended = True
        self._register(outcome)
        return summary

    def _register(self, outcome: JobOutcome) -> None:
        """With tracking.register_as, make the finished run's model a registry version (after its status is set,
        so that its config.yaml is in the store). A sweep's trial leaves that to the sweep's end: only the best
        trial is registered."""
        tracking = self.job.tracking
        if (
            tracking.register_as
            and outcome.status == "FINISHED"
            and self.link.parent_run_id is None
            and self.sink.run_id
        ):
            from orchestrator.registry.after_run import register_after_run

            self.console.message(register_after_run(tracking, self.sink.run_id, "the run"))

    def _attach(self, target: ResumeTarget) -> Any:
        """The resumed run, when tracking is on and its store has it; else None."""
        job, console = self.job, self.console
        if not job.tracking.enabled or target.run_id is None:
            return None
        from orchestrator.tracking.run_recorder import RunRecorder

        sink = RunRecorder.attach(
            job.tracking,
            target.run_id,
            notify=console.message,
            upload_checkpoints=job.checkpoint.upload,
            redactor=redactor_for(job, self.overrides),
        )
        if sink is not None:
            _warn_config_changes(sink.logged_params(), flat_params(job), console)
            sink.set_tags({"orchestrator.resumed_from": str(target.checkpoint)})
            console.message(f"resuming MLflow run {target.run_id} from step {target.step} ({target.checkpoint})")
        return sink

    def _create(self, plan: JobPlan, target: Optional[ResumeTarget]) -> Any:
        """A new run (a sweep's child); a resume that does not continue its run says so."""
        sink = open_sink(
            self.job,
            plan,
            self.overrides,
            self.link,
            notify=self.console.message,
            hydra_dir=self.hydra_dir,
            started_at=self.started_at,
        )
        if target is not None:
            sink.set_tags({"orchestrator.resumed_from": str(target.checkpoint)})
            self.console.message(f"resuming from step {target.step} ({target.checkpoint}) in a new run")
        return sink

    def _abort(self, error: BaseException) -> None:
        """End the run of a job that raised: keep its console log if the store takes it, then the status."""
        if self.sink is None or self._ended:
            return
        self._ended = True
        status, text = (
            ("KILLED", USER_STOP)
            if isinstance(error, KeyboardInterrupt)
            else ("FAILED", f"{type(error).__name__}: {error}")
        )
        # the job's own error is what propagates; a store that refuses the log now is reported by finish()
        with contextlib.suppress(Exception):
            self.sink.log_text(self.console_log.text(), CONSOLE_ARTIFACT)
        self.sink.finish(status, error=text)


def _warn_config_changes(logged: dict[str, str], current: dict[str, str], console) -> None:
    changed = [
        f"{key}: {logged[key]} -> {value}"
        for key, value in current.items()
        if key in logged and logged[key] != value and key != "trainer.resume"
    ]
    if changed:
        console.message(
            "warning: the resumed run was trained with a different config; exact continuation is "
            "not guaranteed: " + "; ".join(changed)
        )


def open_sink(
    job: JobConfig,
    plan: JobPlan,
    overrides: Sequence[str],
    link: RunLink,
    notify=None,
    hydra_dir: Optional[str] = None,
    started_at: Optional[float] = None,
):
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
    tags.update(link.tags)
    tracking = dataclasses.replace(job.tracking, run_name=link.run_name) if link.run_name else job.tracking
    sink = RunRecorder.create(
        tracking,
        flat_params(job),
        tags,
        parent_run_id=link.parent_run_id,
        upload_checkpoints=job.checkpoint.upload,
        redactor=redactor_for(job, overrides),
        start_time=started_at,
        **({"notify": notify} if notify else {}),
    )
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
        {
            "attempt": attempt.number,
            "rank": spec.world_rank,
            "node_rank": spec.node_rank,
            "local_rank": spec.local_rank,
            "node_id": spec.node_id,
            "node_ip": spec.node_ip,
            "params_digest": outcome.rank_results[spec.world_rank].params_digest
            if attempt is attempts[-1] and spec.world_rank in outcome.rank_results
            else None,
        }
        for attempt in attempts
        for spec in attempt.workers
    ]


def record_results(
    sink, job: JobConfig, outcome: JobOutcome, model_logged: Optional[Callable[[], None]] = None
) -> None:
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


def finish_run(
    sink, outcome: JobOutcome, console_log: Optional[ConsoleLog] = None, end_time: Optional[float] = None
) -> None:
    """Log the console log, then the run's final status and error."""
    if console_log is not None:
        sink.log_text(console_log.text(), CONSOLE_ARTIFACT)
    error = outcome.error
    if error and outcome.traceback:
        error = f"{error}\n\n{outcome.traceback}"
    sink.finish(outcome.status, error=error, end_time=end_time)


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


def trained_model(job: JobConfig, model_state):
    """The configured architecture holding the trained weights rank 0 sent back."""
    from orchestrator.config.schema import TargetModelConfig

    if isinstance(job.model, TargetModelConfig):
        from orchestrator.train.components import build_target_model

        model = build_target_model(job.model)
    else:
        from orchestrator.config.schema import data_input_shape, data_num_classes
        from orchestrator.train.models import build_model

        model = build_model(job.model, data_input_shape(job.data), data_num_classes(job.data))
    model.load_state_dict(model_state)
    return model.eval()
