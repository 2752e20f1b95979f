"""A sweep's driver: one Ray connection and one MLflow parent run for every trial, trials on threads.

Each trial is a whole job (its own placement group, worker group and controller) run by `run_job` on
a thread of its own: a job's driver mostly waits on Ray, so threads are enough, and the trials'
recording stays in this process, where the StoreGuard makes their writes to one SQLite store take
turns. The session's thread (the one that calls `run`) starts trials as free resources and
`hydra.launcher.max_concurrent` allow, records each as it ends, and turns Ctrl-C into stop requests
for the running trials. It owns the trial threads: `run` returns (or re-raises) only after every
thread it started has ended and been joined.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import queue
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Hashable, Optional, Sequence, TextIO

from launchers.cluster.connection import cluster_snapshot, connect
from launchers.jobs.sweep_report import parent_results, print_summary
from launchers.jobs.sweep_trial import TrialWatch, run_trial, trial_console, trial_tags
from launchers.workers.worker_shelf import GroupShape, WorkerShelf
from orchestrator import __version__
from orchestrator.cli.compare import SWEEP_TAG  # the parent run's tag that `orchestrator compare --sweep ID` looks for
from orchestrator.config.export import flat_params, redactor_for
from orchestrator.config.schema import JobConfig
from orchestrator.errors import ConfigError
from orchestrator.lifecycle.controller import USER_STOP
from orchestrator.planning.plan import JobPlan, plan_job
from orchestrator.sweep.admission import Admission
from orchestrator.sweep.early_stop import MedianStoppingRule
from orchestrator.sweep.judging import TrialJudge
from orchestrator.sweep.trials import (
    FINISHED,
    NOT_STARTED,
    TrialRecord,
    TrialSpec,
    shared_key_problems,
    sweep_status,
    varying,
)
from orchestrator.tracking.metrics_sink import MetricsSink, NullSink
from orchestrator.tracking.provenance import git_commit
from orchestrator.tracking.transport import check_server, is_server

RECHECK_S = 0.5
"""While trials wait for resources, how often the driver looks at the cluster again: Ray's view of the
resources of a trial that just ended lags a little behind."""


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """What the sweep is, as Hydra gives it: its id, sweeper, command-line overrides and concurrency cap."""

    sweep_id: str
    sweeper: str
    overrides: tuple[str, ...]
    """The sweep's command-line overrides, as typed (`optim.lr=1e-3,1e-2 model=mlp`)."""
    fixed_keys: frozenset[str] = frozenset()
    """Keys those overrides set to one value for every trial (`model`); the others are the sweep's choices."""
    max_concurrent: Optional[int] = None


def new_sweep_id() -> str:
    """A sweep id people can read and type: the local start time plus a few random hex digits."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


_Running = dict[int, tuple[threading.Thread, TrialWatch, Optional[TrialJudge]]]
"""The trials running now: number -> (its thread, its watch, the sweeper's judge of it or None)."""


@dataclasses.dataclass(eq=False)
class SweepSession:
    """Runs a sweep's batches of trials on one cluster, recorded under one parent run; `close` ends it."""

    job: JobConfig
    """The sweep's own config (its command line without the swept values): cluster, store, sweep.*."""
    settings: SweepSettings
    admission: Admission
    rule: Optional[MedianStoppingRule]
    """sweep.early_stop=median's rule, shared by the trials; None without early stopping. A trial the
    sweeper gives a judge of its own (TrialSpec.judge, hydra/sweeper=optuna) is judged by that instead."""
    parent: MetricsSink
    """The parent run's recorder (a NullSink without tracking)."""
    exits: contextlib.ExitStack
    """What `close` releases: the Ray connection."""
    stderr: TextIO
    stdout: TextIO
    records: dict[int, TrialRecord] = dataclasses.field(default_factory=dict)
    lines: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    """One line at a time from the trials and the driver."""
    started: float = dataclasses.field(default_factory=time.monotonic)
    interrupted: bool = False
    error: Optional[str] = None
    waiting: set[int] = dataclasses.field(default_factory=set)
    """Trials whose wait for resources was already said."""
    shelf: Optional[WorkerShelf] = None
    """The idle groups of ended trials (sweep.reuse_workers), removed when the session closes."""

    @classmethod
    def open(
        cls, job: JobConfig, settings: SweepSettings, stderr: Optional[TextIO] = None, stdout: Optional[TextIO] = None
    ) -> "SweepSession":
        """Connect to the sweep's cluster (once, for every trial) and create the parent run."""
        if job.tracking.enabled and is_server(job.tracking.uri):
            check_server(job.tracking.uri, job.tracking.experiment)
        exits = contextlib.ExitStack()
        try:
            baseline = exits.enter_context(connect(job.cluster))
            shelf = WorkerShelf() if job.sweep.reuse_workers else None
            if shelf is not None:
                exits.callback(shelf.close)  # before the connection closes (the stack unwinds in reverse)
            parent = open_parent_run(job, settings)
        except BaseException:
            exits.close()
            raise
        sweep = job.sweep
        rule = (
            MedianStoppingRule(sweep.objective, sweep.direction, sweep.early_stop_min_trials)
            if sweep.early_stop == "median"
            else None
        )
        session = cls(
            job,
            settings,
            Admission(baseline, settings.max_concurrent),
            rule,
            parent,
            exits,
            stderr or sys.stderr,
            stdout or sys.stdout,
            shelf=shelf,
        )
        where = f"; MLflow parent run {parent.run_id}" if parent.run_id else ""
        at_once = settings.max_concurrent or "as many as the free resources allow"
        session.say(
            f"id {settings.sweep_id}, sweeper {settings.sweeper}, hydra/launcher=ray (trials at once: {at_once}){where}"
        )
        return session

    def say(self, text: str) -> None:
        """A line of the sweep's own on stderr."""
        with self.lines:
            self.stderr.write(f"sweep: {text}\n")
            self.stderr.flush()

    def run(self, trials: Sequence[TrialSpec]) -> list[TrialRecord]:
        """Run a batch of trials to their ends; their records in the order given.

        Every trial is checked and planned before any of them starts. Ctrl-C (or anything else that
        ends the loop) asks the running trials to stop (a second Ctrl-C kills them), waits for them, and
        is raised again.
        """
        plans = {spec.number: self._plan(spec) for spec in trials}
        pending = collections.deque(trials)
        running: _Running = {}
        ended: queue.Queue[TrialRecord] = queue.Queue()
        try:
            while pending or running:
                self._start_what_fits(pending, running, plans, ended)
                try:
                    record = ended.get(timeout=RECHECK_S)
                except queue.Empty:
                    continue
                self._ended(record, running)
        except BaseException:  # Ctrl-C, SIGTERM, or an error in the driver itself: no trial is left running
            self._interrupt(pending, running, ended)
            raise
        return [self.records[spec.number] for spec in trials]

    def _plan(self, spec: TrialSpec) -> JobPlan:
        problems = shared_key_problems(self.job, spec.job)
        if problems:
            raise ConfigError([f"trial {spec.number}: {problem}" for problem in problems])
        return plan_job(spec.job, self.admission.baseline)

    def _start_what_fits(
        self,
        pending: collections.deque[TrialSpec],
        running: _Running,
        plans: dict[int, JobPlan],
        ended: queue.Queue[TrialRecord],
    ) -> None:
        while pending:
            spec = pending[0]
            waits = self._admit(spec, plans[spec.number])
            if waits is not None:
                if spec.number not in self.waiting:
                    self.waiting.add(spec.number)
                    self.say(f"trial {spec.number} waits for resources: {waits}")
                return
            pending.popleft()
            watch = TrialWatch(self.job.sweep.objective, self.rule if spec.judge is None else spec.judge)
            thread = threading.Thread(
                target=self._trial_thread, args=(spec, watch, ended), name=f"orchestrator-trial-{spec.number}"
            )
            running[spec.number] = (thread, watch, spec.judge)
            thread.start()
            self.say(f"trial {spec.number} started: {self._label(spec.overrides)}")

    def _admit(self, spec: TrialSpec, plan: JobPlan) -> Optional[str]:
        """Book the trial and return None when it may start now, else say why it waits. With sweep.reuse_workers
        it runs on an idle group of its shape when there is one; when it needs the room that idle groups of
        other shapes hold, they are removed."""
        shelf, admission = self.shelf, self.admission
        if shelf is not None and admission.capped() is None:
            ended_trials = {key[1] for key in admission.idle if isinstance(key, tuple)}
            previous = shelf.reserve(GroupShape.of(plan, spec.job), spec.number, ended_trials)
            if previous is not None:
                return admission.reuse(spec.number, _idle(previous))
        waits = admission.admit(spec.number, plan, cluster_snapshot(fixed_size=False))
        if waits is not None and shelf is not None and admission.capped() is None:
            evicted = shelf.evict()
            for owner in evicted:
                admission.unshelve(_idle(owner))
            if evicted:  # Ray's view of what they held lags a moment: the trial may still wait for it
                waits = admission.admit(spec.number, plan, cluster_snapshot(fixed_size=False))
        return waits

    def _trial_thread(self, spec: TrialSpec, watch: TrialWatch, ended: queue.Queue[TrialRecord]) -> None:
        record = None
        try:
            console = trial_console(self.stderr, self.stdout, spec.number, self.lines)
            tags = trial_tags(spec, self.settings.sweep_id, self.settings.fixed_keys)
            record = run_trial(spec, console, watch, self.parent.run_id, tags, self.shelf)
        finally:  # the session waits for exactly one record per thread it started
            ended.put(
                record
                or TrialRecord(
                    spec.number,
                    spec.overrides,
                    "FAILED",
                    run_id=watch.run_id,
                    error="the trial's thread stopped on an internal error",
                )
            )

    def _ended(self, record: TrialRecord, running: _Running) -> None:
        self.records[record.number] = record  # first: a Ctrl-C from here on cannot lose the record
        thread, watch, judge = running.pop(record.number)
        thread.join()
        if self.shelf is not None and self.shelf.holds(record.number):  # its group waits for the next trial
            self.admission.shelve(record.number, _idle(record.number))
        else:
            self.admission.release(record.number)
        if judge is not None:  # the sweeper learns how its trial ended as soon as it ends
            judge.ended(record.status, record.objective)
        elif record.status == FINISHED and self.rule is not None:
            self.rule.completed(watch.curve)
        objective = "" if record.objective is None else f": {self.job.sweep.objective}={record.objective:.4f}"
        detail = f" ({record.error})" if record.error and record.status != FINISHED else ""
        self.say(f"trial {record.number} {record.status} in {record.duration_s:.1f} s{objective}{detail}")

    def _interrupt(
        self, pending: collections.deque[TrialSpec], running: _Running, ended: queue.Queue[TrialRecord]
    ) -> None:
        self.interrupted = True
        for spec in pending:
            self.records[spec.number] = TrialRecord(spec.number, spec.overrides, NOT_STARTED)
        pending.clear()
        self.say(f"interrupted: stopping {len(running)} running trial(s) (Ctrl-C again to kill them)")
        for _, watch, _ in running.values():
            watch.stop_requests.request(USER_STOP)
        while running:
            try:
                self._ended(ended.get(timeout=RECHECK_S), running)
            except queue.Empty:
                continue
            except KeyboardInterrupt:  # the controllers end a job at once on a second request
                self.say("killing the running trials")
                for _, watch, _ in running.values():
                    watch.stop_requests.request(USER_STOP)

    def _label(self, overrides: Sequence[str]) -> str:
        return " ".join(varying(overrides, self.settings.fixed_keys)) or "(no overrides of its own)"

    def fail(self, error: str) -> None:
        """The sweep cannot go on (an invalid trial config, a sweeper error): `close` records why."""
        self.error = error

    def close(self, exit_code: int) -> int:
        """End the parent run, print the summary table and release the cluster; returns the exit code.

        `exit_code` is how the sweeper's run ended (0; 130 after Ctrl-C; 1 or 2 after an error): 0 turns
        into 1 when a trial failed.
        """
        records = [self.records[number] for number in sorted(self.records)]
        interrupted = self.interrupted or exit_code == 130
        status = sweep_status(records, interrupted) if exit_code in (0, 130) else "FAILED"
        try:
            metrics, tags, error = parent_results(records, self.job.sweep, status, self.error)
            self.parent.log_metrics({**metrics, "sweep/wall_s": time.monotonic() - self.started}, step=0)
            self.parent.set_tags(tags)
            self.parent.finish(status, error=error)
            with self.lines:
                print_summary(
                    self.stdout, records, self.job, self.settings, self.parent.run_id, time.monotonic() - self.started
                )
        finally:
            self.exits.close()
        if exit_code == 0 and status == "FAILED":
            return 1
        return exit_code


def _idle(trial: Hashable) -> tuple[str, Hashable]:
    """The admission's key for what the idle group of an ended trial holds."""
    return ("idle", trial)


def open_parent_run(job: JobConfig, settings: SweepSettings) -> MetricsSink:
    """The sweep's parent run: the sweep's own settings as params, its id, sweeper and overrides as tags."""
    if not job.tracking.enabled:
        return NullSink()
    from orchestrator.tracking.run_recorder import RunRecorder

    params = {key: value for key, value in flat_params(job).items() if key.startswith("sweep.")}
    params["hydra.launcher.max_concurrent"] = str(settings.max_concurrent)
    tags = {
        SWEEP_TAG: settings.sweep_id,
        "orchestrator.sweeper": settings.sweeper,
        "orchestrator.sweep.overrides": " ".join(settings.overrides),  # the recorder redacts every tag
        "orchestrator.launcher": "ray",
        "orchestrator.version": __version__,
        "mlflow.source.name": "orchestrator train -m",
    }
    commit = git_commit(Path.cwd())
    if commit:
        tags["mlflow.source.git.commit"] = commit
    tracking = dataclasses.replace(job.tracking, run_name=job.tracking.run_name or f"sweep-{settings.sweep_id}")
    return RunRecorder.create(tracking, params, tags, redactor=redactor_for(job, settings.overrides))
