"""The job's monitoring: a JobObserver that runs one monitor actor per node of the job.

It owns the monitor actors: started when the worker group starts (and re-targeted after a restart),
stopped and killed in `job_ended`, which the controller calls on every path. Everything it does
runs on the controller's thread: it never blocks there while the job runs (it checks its monitors'
outstanding `take()` calls with a zero timeout when a report comes in), so the sink and the console
keep their single writer. A monitor that fails is reported and dropped; any other fault in monitoring
is printed and ends monitoring; neither ends the job.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Optional, ParamSpec, Sequence

from launchers.monitoring.node_monitor import start_monitor_actor
from orchestrator.cli.console import Console
from orchestrator.config.schema import JobConfig, MonitorConfig
from orchestrator.lifecycle.rank_reports import StepReport
from orchestrator.monitoring.gpu_probe import ProbeFactory
from orchestrator.monitoring.node_sampler import targets_by_node
from orchestrator.monitoring.nvml_probe import open_nvml_probe
from orchestrator.monitoring.routing import SystemRecorder
from orchestrator.monitoring.samples import NodeTargets
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.tracking.metrics_sink import MetricsSink

if TYPE_CHECKING:
    from ray import ObjectRef

    from launchers.monitoring.node_monitor import MonitorHandle
    from orchestrator.lifecycle.controller import JobOutcome

Args = ParamSpec("Args")

POLL_INTERVAL_S = 0.2
"""How often (at most) a report makes the driver look for collected samples."""
LONG_POLL_S = 10.0
"""How long one take() call waits for a sample before returning empty (and being re-issued)."""
STOP_TIMEOUT_S = 30.0
"""How long the end of the job waits for the monitors' last samples before killing them."""


def job_observers(job: JobConfig, sink: MetricsSink, console: Console, job_name: str) -> list[JobMonitor]:
    """The observers a job runs with: its monitoring, unless monitor.enabled=false."""
    return [JobMonitor(job.monitor, sink, console, job_name)] if job.monitor.enabled else []


class JobMonitor:
    """Implements orchestrator.lifecycle.controller.JobObserver with node monitor actors and a SystemRecorder."""

    def __init__(
        self,
        config: MonitorConfig,
        sink: MetricsSink,
        console: Console,
        job_name: str,
        probe_factory: ProbeFactory = open_nvml_probe,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.console = console
        self.job_name = job_name
        self.probe_factory = probe_factory
        self.clock = clock
        self.recorder = SystemRecorder(config, sink, console)
        self.actors: dict[str, MonitorHandle] = {}
        self._node_ids: dict[str, str] = {}  # node name -> the Ray node its monitor is pinned to
        self._pending: dict[ObjectRef[Any], tuple[str, str]] = {}  # outstanding call -> (node, "start" | "take")
        self._last_poll = float("-inf")
        self.failure: Optional[str] = None

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        """Start (or re-target) one monitor per node of the group; stop those of nodes it left."""
        self._guarded(self._start, specs)

    def report(self, world_rank: int, report: object) -> None:
        """Feed step times to the straggler check; collect samples the monitors have taken."""
        self._guarded(self._report, report)

    def job_ended(self, outcome: JobOutcome) -> None:
        """Take the monitors' last samples, log the summary, and kill the monitors (always)."""
        try:
            self._guarded(self._finish)
        finally:
            self._kill(list(self.actors))

    def _guarded(self, action: Callable[Args, None], *args: Args.args, **kwargs: Args.kwargs) -> None:
        if self.failure is not None:
            return
        try:
            action(*args, **kwargs)
        except Exception as error:  # monitoring must never take the job down
            self.failure = f"{type(error).__name__}: {error}"
            self.console.warning(f"monitoring stopped: {self.failure}")
            self._kill(list(self.actors))

    def _start(self, specs: Sequence[WorkerSpec]) -> None:
        targets = targets_by_node(specs)
        self.recorder.on_group(specs)
        # after a restart a node name may stand for another machine: its old monitor goes as well
        gone = [node for node in self.actors if node not in targets or targets[node][0] != self._node_ids[node]]
        if gone:
            self._collect(self._stop_calls(gone))
            self._kill(gone)
        for node, (node_id, node_targets) in targets.items():
            self._watch(node, node_id, node_targets)

    def _watch(self, node: str, node_id: str, targets: NodeTargets) -> None:
        fresh = node not in self.actors
        if fresh:
            self._node_ids[node] = node_id
            self.actors[node] = start_monitor_actor(
                node_id, f"{self.job_name}-monitor-{node}", self.probe_factory, self.config.interval_s
            )
        actor = self.actors[node]
        self._pending[actor.start.remote(targets)] = (node, "start")
        if fresh:
            self._pending[actor.take.remote(LONG_POLL_S)] = (node, "take")

    def _report(self, report: object) -> None:
        if isinstance(report, StepReport):
            self.recorder.on_step(report)
        now = self.clock()
        if now - self._last_poll >= POLL_INTERVAL_S:
            self._last_poll = now
            self._poll()

    def _poll(self) -> None:
        import ray

        if not self._pending:
            return
        calls = list(self._pending)
        ready, _ = ray.wait(calls, num_returns=len(calls), timeout=0)
        for call in ready:
            node, kind = self._pending.pop(call)
            self._handle(node, kind, call)
            if kind == "take" and node in self.actors:
                self._pending[self.actors[node].take.remote(LONG_POLL_S)] = (node, "take")

    def _handle(self, node: str, kind: str, call: ObjectRef[Any]) -> None:
        import ray
        from ray.exceptions import RayError

        try:
            result = ray.get(call)
        except RayError as error:  # the actor died, or raised (a probe that fails on its node): drop that node
            self.console.warning(f"{node} is no longer monitored: its monitor failed: {_cause(error)}")
            self._kill([node])
            return
        if kind == "start":
            self.recorder.on_status(result)
        else:
            for item in result:
                self.recorder.on_item(item)

    def _finish(self) -> None:
        self._collect(self._stop_calls(list(self.actors)))
        self.recorder.finish()

    def _stop_calls(self, nodes: list[str]) -> dict[ObjectRef[Any], tuple[str, str]]:
        return {self.actors[node].stop.remote(): (node, "stop") for node in nodes}

    def _collect(self, stops: dict[ObjectRef[Any], tuple[str, str]]) -> None:
        """Handle what the outstanding calls and these stop() calls return, in that order, then drop them."""
        import ray

        nodes = {node for node, _ in stops.values()}
        earlier = {call: where for call, where in self._pending.items() if where[0] in nodes}
        calls = list(earlier) + list(stops)
        if not calls:
            return
        ready, _ = ray.wait(calls, num_returns=len(calls), timeout=STOP_TIMEOUT_S)
        done = set(ready)
        for call in calls:
            node, kind = earlier.get(call) or stops[call]
            self._pending.pop(call, None)
            if call in done and node in self.actors:
                self._handle(node, "start" if kind == "start" else "take", call)

    def _kill(self, nodes: list[str]) -> None:
        import ray

        for node in nodes:
            actor = self.actors.pop(node, None)
            if actor is not None:
                ray.kill(actor, no_restart=True)
        self._pending = {call: where for call, where in self._pending.items() if where[0] in self.actors}


def _cause(error: Exception) -> str:
    cause = getattr(error, "cause", None)  # a RayTaskError carries the exception raised in the actor
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
