"""The simulated world of bench_scale.py: a cluster, a job, a worker group, node monitors and a clock.

What lies beyond the driver is simulated; the driver's code (planning, the Controller, its observers,
the SystemRecorder) is the real one.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from dataclasses import replace
from typing import Callable, Optional, Sequence, Union

from orchestrator.cli.console import Console
from orchestrator.config.rules import validate
from orchestrator.config.schema import (
    FailureConfig,
    JobConfig,
    MlpConfig,
    MonitorConfig,
    ScalingConfig,
    SyntheticConfig,
)
from orchestrator.lifecycle.controller import Controller, ControllerSettings
from orchestrator.lifecycle.observers import routing_observers
from orchestrator.lifecycle.rank_reports import MetricsReport, StepReport
from orchestrator.lifecycle.states import Restarting, Running
from orchestrator.lifecycle.worker_group import GroupEvent, RankLost, RankReport
from orchestrator.monitoring.gpu_probe import GpuSample
from orchestrator.monitoring.routing import SystemRecorder
from orchestrator.monitoring.samples import (
    GpuInfo,
    HostSample,
    MonitorItem,
    MonitorStatus,
    NodeSample,
)
from orchestrator.monitoring.summaries import MIB
from orchestrator.planning.plan import ClusterSnapshot, JobPlan, NodeSnapshot
from orchestrator.planning.planned_job import plan_on_cluster
from orchestrator.planning.rank_specs import AttemptSpec, PlacedBundle, WorkerSpec, worker_specs
from orchestrator.tracking.metrics_sink import NullSink

GPUS_PER_NODE = 8
POLL_INTERVAL_S = 0.2
"""As launchers.monitoring.job_monitoring.POLL_INTERVAL_S: how often a report makes the driver take samples."""
BATCH = 1024
"""Events per wait(): what a busy Ray group hands the controller at once."""
HANG_TIMEOUT_S = 300.0
MONITOR = MonitorConfig()
"""The default monitoring: every node sampled every 5 s."""


class SimClock:
    """The controller's clock: moves only when the simulation says."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class DiscardStream:
    """A console stream that keeps nothing."""

    def write(self, text: str, /) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class SimGroup:
    """Implements WorkerGroup: scripted event batches, restarts that return at once with the next specs."""

    def __init__(self, specs: Sequence[WorkerSpec]):
        self._specs: tuple[WorkerSpec, ...] = ()
        self.first = tuple(specs)
        self.next_specs: Optional[tuple[WorkerSpec, ...]] = None
        self.batches: deque[list[GroupEvent]] = deque()

    @property
    def specs(self) -> Sequence[WorkerSpec]:
        return self._specs

    def start(self, resume_from: Optional[str] = None, attempt: int = 0, avoid: frozenset[str] = frozenset()) -> None:
        self._specs = self.first

    def restart(
        self, lost_ranks: set[int], resume_from: Optional[str], attempt: int, avoid: frozenset[str] = frozenset()
    ) -> dict[str, float]:
        if self.next_specs is not None:
            self._specs, self.next_specs = self.next_specs, None
        return {}

    def wait(self, timeout_s: float) -> list[GroupEvent]:
        return self.batches.popleft() if self.batches else []

    def request_stop(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


class SimMonitor:
    """Implements JobObserver as launchers' JobMonitor does, with node monitors simulated: the real
    SystemRecorder gets every StepReport, each node's status once per group, and the queued node samples
    whenever a report comes POLL_INTERVAL_S after the previous poll."""

    def __init__(self, recorder: SystemRecorder, clock: Callable[[], float], nodes: int):
        self.recorder = recorder
        self.clock = clock
        self.queued: deque[Union[MonitorStatus, MonitorItem]] = deque()
        self.last_poll = float("-inf")
        self.failure: Optional[str] = None
        # what each node's monitor answers to start(): made here, as it is made on the nodes
        self.statuses = {f"node{rank}": _status(f"node{rank}") for rank in range(nodes)}

    def group_started(self, specs: Sequence[WorkerSpec]) -> None:
        # JobMonitor also computes each node's targets here (timed on its own: `targets_s`) and starts or
        # re-targets each node's monitor actor, one Ray call per node; their answers come with a later poll
        self.recorder.on_group(specs)
        self.queued.extend(self.statuses[f"node{rank}"] for rank in range(specs[-1].node_rank + 1))

    def report(self, world_rank: int, report: object) -> None:
        self._guarded(self._report, report)

    def _guarded(self, action: Callable[[object], None], argument: object) -> None:
        # as JobMonitor: monitoring that fails stops, the job goes on (and the indirection costs what it costs)
        if self.failure is not None:
            return
        try:
            action(argument)
        except Exception as error:
            self.failure = f"{type(error).__name__}: {error}"

    def _report(self, report: object) -> None:
        if isinstance(report, StepReport):
            self.recorder.on_step(report)
        now = self.clock()
        if now - self.last_poll >= POLL_INTERVAL_S:
            self.last_poll = now
            self._poll()

    def _poll(self) -> None:
        while self.queued:
            item = self.queued.popleft()
            if isinstance(item, MonitorStatus):
                self.recorder.on_status(item)
            else:
                self.recorder.on_item(item)

    def job_ended(self, outcome: object) -> None:
        self.recorder.finish()


def _status(node: str) -> MonitorStatus:
    gpus = tuple(GpuInfo(index, f"GPU-{node}-{index}", "NVIDIA H100") for index in range(GPUS_PER_NODE))
    return MonitorStatus(node=node, hostname=f"host-{node}", gpus=gpus)


def cluster(nodes: int) -> ClusterSnapshot:
    """`nodes` idle nodes of 8 GPUs, 96 CPUs and 1 TiB each."""
    resources = {"CPU": 96.0, "GPU": float(GPUS_PER_NODE), "memory": 1024.0 * 1024**3}
    return ClusterSnapshot(
        tuple(NodeSnapshot(f"{i:056x}", _ip(i), dict(resources), dict(resources)) for i in range(nodes))
    )


def job(nodes: int) -> JobConfig:
    """N nodes x 8 GPUs: one rank per GPU, one bundle per node."""
    scaling = ScalingConfig(num_workers=nodes * GPUS_PER_NODE, gpus_per_worker=1.0, workers_per_node=GPUS_PER_NODE)
    config = JobConfig(model=MlpConfig(), data=SyntheticConfig(), loss=None, scaling=scaling)
    validate(config)
    return config


def placed_bundles(plan_nodes: Sequence[Optional[str]], snapshot: ClusterSnapshot) -> list[PlacedBundle]:
    """The bundles where the placement prediction put them (as Ray would report them)."""
    ips = {node.node_id: node.ip for node in snapshot.nodes}
    return [PlacedBundle(index, node, ips[node]) for index, node in enumerate(plan_nodes) if node is not None]


def specs_for(plan: JobPlan, placed: Sequence[PlacedBundle], attempt: int = 0) -> list[WorkerSpec]:
    """Every rank's spec as the Ray group makes it: GPU ids, pids and the attempt included."""
    gpu_ids = [[str(rank % GPUS_PER_NODE)] for rank in range(plan.world_size)]
    pids = [10_000 + rank for rank in range(plan.world_size)]
    return worker_specs(plan, placed, 29500, gpu_ids, pids, AttemptSpec("bench-scale", attempt, -1))


def _ip(index: int) -> str:
    return f"10.{index // 65536}.{index // 256 % 256}.{index % 256}"


class Simulation:
    """A controller over a simulated group of `nodes` x 8 ranks, its clock and its monitoring."""

    def __init__(self, nodes: int):
        snapshot = cluster(nodes)
        planned = plan_on_cluster(job(nodes), snapshot)
        placed = placed_bundles(planned.prediction.nodes, snapshot)
        self.specs = tuple(specs_for(planned.plan, placed))
        # a resize drops the last node, which the next resize brings back
        self.smaller = tuple(specs_for(replace(planned.plan, world_size=(nodes - 1) * GPUS_PER_NODE), placed[:-1]))
        self.nodes = nodes
        self.clock = SimClock()
        self.group = SimGroup(self.specs)
        console = Console(DiscardStream(), interactive=False, clock=self.clock)
        sink = NullSink()
        self.monitor = SimMonitor(SystemRecorder(MONITOR, sink, console), self.clock, nodes)
        policy = FailureConfig(max_restarts=-1, hang_timeout_s=HANG_TIMEOUT_S)
        self.controller = Controller(
            lambda: self.group,
            console,
            [self.monitor, *routing_observers(sink, console, "builtin", self.clock)],
            ControllerSettings(failure_policy=policy),
            clock=self.clock,
            wall_clock=lambda: 1_800_000_000.0,
        )
        self.round = 0

    @property
    def ranks(self) -> int:
        return len(self.group.specs)

    def heartbeats(self, rounds: int) -> tuple[float, float, int]:
        """Feed `rounds` seconds of reports, each round made before its timing starts: (seconds, CPU seconds,
        reports handled)."""
        seconds = cpu_seconds = 0.0
        reports = 0
        for _ in range(rounds):
            batches, samples = self._round()
            reports += sum(len(batch) for batch in batches)
            began, cpu_began = time.perf_counter(), time.process_time()
            self._play(batches, samples)
            seconds += time.perf_counter() - began
            cpu_seconds += time.process_time() - cpu_began
        return seconds, cpu_seconds, reports

    def step_timed(self) -> float:
        """Seconds of one controller step (the garbage of what came before collected first, as timeit would)."""
        gc.collect()
        began = time.perf_counter()
        self.controller.step()
        return time.perf_counter() - began

    def lose_node(self, node_rank: int) -> float:
        """The 8 ranks of one node die at once: seconds of the step that decides on it."""
        lost = [spec for spec in self.group.specs if spec.node_rank == node_rank]
        self.group.batches.append([RankLost(spec.world_rank, spec.node_ip, "the node was lost") for spec in lost])
        seconds = self.step_timed()
        assert isinstance(self.controller.state, Restarting), self.controller.state
        return seconds

    def restart(self, specs: Optional[Sequence[WorkerSpec]] = None) -> float:
        """Restarting -> Running (with other ranks: a resize): seconds of that step."""
        self.group.next_specs = tuple(specs) if specs is not None else None
        seconds = self.step_timed()
        assert isinstance(self.controller.state, Running), self.controller.state
        return seconds

    def hang(self) -> float:
        """The last rank stops reporting, the others step on: seconds of the step that finds it hung."""
        self.clock.now += HANG_TIMEOUT_S * 2 / 3
        self._play(*self._round(silent=self.ranks - 1))
        self.clock.now += HANG_TIMEOUT_S / 3
        self.group.batches.append([])
        seconds = self.step_timed()
        assert isinstance(self.controller.state, Restarting), self.controller.state
        return seconds

    def _round(self, silent: Optional[int] = None) -> tuple[list[list[GroupEvent]], list[NodeSample]]:
        self.round += 1
        events: list[GroupEvent] = [RankReport(r, self._step_report(r)) for r in range(self.ranks) if r != silent]
        events.append(RankReport(0, MetricsReport(self.round, {"train/loss": 1.0 / self.round, "train/lr": 1e-3})))
        batches = [events[start : start + BATCH] for start in range(0, len(events), BATCH)]
        nodes = max(spec.node_rank for spec in self.group.specs) + 1
        # each node's monitor samples every interval_s: a round (one second) brings that share of the nodes
        every = round(MONITOR.interval_s)
        return batches, [self.node_sample(node) for node in range(nodes) if (node + self.round) % every == 0]

    def _play(self, batches: list[list[GroupEvent]], samples: list[NodeSample]) -> None:
        """One second of the job: the batches spread over it, each node's sample arriving on the way."""
        tick = 1.0 / len(batches)
        per_batch = -(-len(samples) // len(batches)) if samples else 1
        for index, batch in enumerate(batches):
            self.monitor.queued.extend(samples[index * per_batch : (index + 1) * per_batch])
            self.group.batches.append(batch)
            self.clock.now += tick
            self.controller.step()

    def _step_report(self, world_rank: int) -> StepReport:
        # the last node is 40% slow: its ranks are stragglers, as on a real cluster now and then
        slow = 1.4 if world_rank >= self.ranks - GPUS_PER_NODE else 1.0
        jitter = 1.0 + ((world_rank * 7919 + self.round * 104729) % 1000) / 20_000
        seconds = 0.25 * slow * jitter
        return StepReport(world_rank, self.round * 4, 100_000, 0, seconds, 4, reach_sync_s=seconds * 0.8)

    def node_sample(self, node_rank: int) -> NodeSample:
        """What the monitor of node `node_rank` sends now: the host and its 8 GPUs, busy."""
        now = self.clock.now
        ranks = range(node_rank * GPUS_PER_NODE, (node_rank + 1) * GPUS_PER_NODE)
        host = HostSample(
            now, 42.0, 300_000 * MIB, 1_000_000 * MIB, {r: 9_000 * MIB for r in ranks}, {r: 99.0 for r in ranks}
        )
        gpus = {
            index: GpuSample(
                f"GPU-node{node_rank}-{index}",
                now,
                utilization_percent=97.0,
                memory_utilization_percent=45.0,
                memory_used_bytes=60_000 * MIB,
                memory_total_bytes=81_559 * MIB,
                power_w=650.0,
                power_limit_w=700.0,
                temperature_c=66.0,
                sm_clock_mhz=1980.0,
                throttle_reasons=0,
                gpm={"gpm_sm_util_percent": 80.0, "gpm_tensor_util_percent": 55.0},
            )
            for index in range(GPUS_PER_NODE)
        }
        return NodeSample(f"node{node_rank}", self.round, host, gpus, wall_time_s=1_800_000_000.0 + now)
