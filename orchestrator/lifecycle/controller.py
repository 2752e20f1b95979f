"""The job's controller: drives the state machine of orchestrator.lifecycle.states with a worker group.

Steppable: `step()` makes one transition and returns the new state, so tests drive it one event at a
time with a fake group. The controller decides transitions and does what they need of the group;
everything a report is for (the run's records, the console, monitoring) is an observer's job.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable, Optional, Sequence

from orchestrator.errors import LaunchError, OrchestratorError
from orchestrator.lifecycle import states
from orchestrator.lifecycle.observers import JobObserver, Observers
from orchestrator.lifecycle.rank_reports import StepReport
from orchestrator.lifecycle.states import (
    SETTLE_S,
    STOP_GRACE_S,
    USER_STOP,
    Attempt,
    AttemptProgress,
    ControllerSettings,
    Done,
    History,
    JobOutcome,
    Pending,
    Restarting,
    RestartRecord,
    ResumePoint,
    Running,
    State,
    Stopping,
    stop_message,
)
from orchestrator.lifecycle.worker_group import RankReport, WorkerGroup
from orchestrator.planning.rank_specs import WorkerSpec

__all__ = [
    "Attempt",
    "Controller",
    "ControllerSettings",
    "JobObserver",
    "JobOutcome",
    "RestartRecord",
    "ResumePoint",
    "SETTLE_S",
    "STOP_GRACE_S",
    "StopRequests",
    "USER_STOP",
    "WAIT_S",
    "stop_message",
]

WAIT_S = 1.0
"""Longest wait for worker events before the controller checks its deadlines again."""


class StopRequests:
    """Requests to stop the job that come from other threads (a sweep's driver, its early-stopping rule).

    Thread-safe. The controller takes them between two steps and handles each like a Ctrl-C: the
    first asks the ranks to stop at their next agreed step, a later one ends the job at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: list[str] = []

    def request(self, reason: str) -> None:
        """Ask the job to stop; `reason` becomes the KILLED run's error."""
        with self._lock:
            self._reasons.append(reason)

    def take(self) -> list[str]:
        """The requests made since the last call, oldest first."""
        with self._lock:
            reasons, self._reasons = self._reasons, []
        return reasons


class Controller:
    """Runs one job to an outcome; `run()` always releases the group, whatever happens.

    `group_factory` makes a worker group (the first, and a whole new one when a restart must rebuild);
    `console` shows the controller's own messages (a stop, a restart) and is closed at the end;
    `find_checkpoint` gives the newest complete checkpoint on disk and its step, or None.
    """

    def __init__(
        self,
        group_factory: Callable[[], WorkerGroup],
        console,
        observers: Sequence[JobObserver] = (),
        settings: ControllerSettings = ControllerSettings(),
        resume: ResumePoint = ResumePoint(),
        *,
        find_checkpoint: Callable[[], Optional[tuple[str, int]]] = lambda: None,
        stop_requests: Optional[StopRequests] = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.group_factory = group_factory
        self.console = console
        self.observers = Observers(observers)
        self.settings = settings
        self.find_checkpoint = find_checkpoint
        self.stop_requests = stop_requests if stop_requests is not None else StopRequests()
        self.clock = clock
        self.wall_clock = wall_clock  # only for records read outside this process (restart.N.began_at)
        self.group: Optional[WorkerGroup] = None
        self.state: State = Pending(History.resuming(resume))

    @property
    def outcome(self) -> Optional[JobOutcome]:
        """How the job ended, once it has."""
        return self.state.outcome if isinstance(self.state, Done) else None

    def run(self) -> JobOutcome:
        """Step until the job has an outcome; Ctrl-C stops the ranks, a second one kills them."""
        try:
            while not isinstance(self.state, Done):
                try:
                    for reason in self.stop_requests.take():
                        if not isinstance(self.state, Done):
                            self.interrupt(reason)
                    if not isinstance(self.state, Done):
                        self.step()
                except KeyboardInterrupt:
                    self.interrupt()
        finally:
            outcome = self._release()
        return outcome

    def step(self) -> State:
        """Make one transition: start the group, restart it, or take one wait's events; returns the new state."""
        state = self.state
        if isinstance(state, Pending):
            self._enter(self._start(state))
        elif isinstance(state, Restarting):
            self._enter(self._restart(state))
        elif isinstance(state, (Running, Stopping)):
            self._follow()
        return self.state

    def interrupt(self, reason: str = USER_STOP) -> State:
        """Stop the job (the user asked, or `reason`): first ask the ranks, and if asked again, kill them."""
        state = self.state
        if isinstance(state, Running):
            self._enter(states.stopping(state, reason, self.clock()))
        else:
            self._enter(states.killed(state, reason, self._specs()))
        return self.state

    def _start(self, state: Pending) -> State:
        self.group = self.group_factory()
        history = state.history
        try:
            self.group.start(history.checkpoint, attempt=len(history.restarts), avoid=history.excluded)
        except LaunchError as error:
            return states.launch_failed(history, self._attempt(), error, self.settings.failure_policy)
        except OrchestratorError as error:
            return states.ended(history, self._attempt(), "FAILED", error=str(error))
        return self._started(history)

    def _started(self, history: History) -> Running:
        running = states.started(history, self._specs(), self.clock())
        self.observers.group_started(running.attempt.workers)
        return running

    def _restart(self, state: Restarting) -> State:
        history = state.history.with_newest(self.find_checkpoint())  # its report may still be in flight
        record = RestartRecord(
            len(history.restarts) + 1,
            state.failure,
            history.checkpoint_step,
            self.clock(),
            self.wall_clock(),
            workers_before=len(state.attempt.workers),
            excluded_node=_newly_excluded(state),
        )
        history = history.with_restart(record)
        try:
            timings = self._relaunch(state, history)
        except LaunchError as error:
            failed = LaunchError(f"restart {record.number} failed: {error}", error.retryable)
            attempt = replace(state.attempt, workers=self._specs())
            return states.launch_failed(history, attempt, failed, self.settings.failure_policy)
        record = replace(record, timings=timings, workers_after=len(self._specs()))
        if record.resized:
            self.console.message(
                f"continuing on {record.workers_after} worker{'' if record.workers_after == 1 else 's'} "
                f"(was {record.workers_before}) from step "
                f"{record.resumed_from_step}"
            )
        history = history.with_restart(record)
        self.observers.restarted(record)
        return self._started(history)

    def _relaunch(self, state: Restarting, history: History) -> dict[str, float]:
        """Replace only the lost workers; after a failed (re)launch, free everything and start a new group."""
        attempt = len(history.restarts)
        if not state.rebuild:
            return dict(self._group().restart(set(state.replaced), history.checkpoint, attempt, avoid=state.avoid))
        began = self.clock()
        self._group().shutdown()
        self.group = self.group_factory()
        self.group.start(history.checkpoint, attempt=attempt, avoid=state.avoid)
        return {"rebuild": self.clock() - began}

    def _follow(self) -> None:
        # the heartbeats (StepReports) of one wait make one new state together, applied before the next other
        # event so that the order of events is kept: at 32,768 ranks a state per heartbeat was most of the driver
        beats: list[int] = []
        for event in self._group().wait(WAIT_S):
            if isinstance(self.state, Done):
                return
            if isinstance(event, RankReport) and isinstance(self.state, (Running, Stopping)):
                self.observers.report(event.world_rank, event.report)
                if type(event.report) is StepReport:
                    beats.append(event.world_rank)
                    continue
            self._heartbeats(beats)
            self._enter(states.on_event(self.state, event, self.clock(), self.settings))
        self._heartbeats(beats)
        if isinstance(self.state, (Running, Stopping)):
            self._enter(states.on_deadlines(self.state, self.clock(), self.settings))

    def _heartbeats(self, beats: list[int]) -> None:
        """Apply the heartbeats gathered so far (those of ranks of a live state) and forget them."""
        if beats and isinstance(self.state, (Running, Stopping)):
            self.state = states.on_heartbeats(self.state, tuple(beats), self.clock())
        beats.clear()

    def _enter(self, state: State) -> None:
        if type(state) is Running and type(self.state) is Running:  # a report that changed progress only
            self.state = state
            return
        # a restart is announced once per failure: deaths noted while restarting change no decision
        decided = self.state.failure if isinstance(self.state, Restarting) else None
        if isinstance(state, Restarting) and state.failure is not decided:
            self.console.message(state.announcement)
            excluded = _newly_excluded(state)
            if excluded is not None:
                self.console.message(
                    f"node {excluded} is excluded from this job: its ranks failed there "
                    f"{self.settings.failure_policy.exclude_node_after} times (failure.exclude_node_after)"
                )
        if isinstance(state, Stopping) and isinstance(self.state, Running):
            # the ranks stop at the next step they agree on, where they also write a checkpoint
            if state.planned is not None:
                self.console.message(f"{state.planned.summary}: the ranks stop at a checkpoint, then the job continues")
            else:
                self.console.message(stop_message(state.reason, self.settings.entrypoint))
            self._group().request_stop()
        self.state = state

    def _release(self) -> JobOutcome:
        """The end on every path: tell the observers, shut the group down, close the console (each despite the last)."""
        if not isinstance(self.state, Done):  # an unexpected error escaped the state machine
            self.state = Done(
                self.state.history, JobOutcome(status="FAILED", error="the controller stopped on an internal error")
            )
        outcome = self.state.outcome
        try:
            self.observers.job_ended(outcome)
        finally:
            try:
                if self.group is not None:
                    self.group.shutdown()
            finally:
                self.console.close()
        return outcome

    def _group(self) -> WorkerGroup:
        if self.group is None:
            raise RuntimeError("the controller has no worker group in this state")
        return self.group

    def _specs(self) -> tuple[WorkerSpec, ...]:
        return tuple(self.group.specs) if self.group is not None else ()

    def _attempt(self) -> AttemptProgress:
        """An attempt that never ran: only the ranks its group has."""
        return AttemptProgress(workers=self._specs())


def _newly_excluded(state: Restarting) -> Optional[str]:
    """The node this restart excludes from the job (failure.exclude_node_after), as `IP (node id prefix)`."""
    if state.excludes is None:  # nearly every restart: no walk over every rank's spec
        return None
    for spec in state.attempt.workers:
        if spec.node_id == state.excludes:
            return f"{spec.node_ip} ({spec.node_id[:8]})"
    return None
