"""The per-node monitor: a Ray actor pinned to one node that samples it every `interval_s`.

It holds no GPU (num_gpus=0) and no CPU reservation (num_cpus=0), so it never competes with the
job's bundles for resources; NVML sees every GPU of the node regardless of CUDA_VISIBLE_DEVICES. The
driver keeps one `take()` call outstanding per monitor (a long poll, as for the workers' reports)
and calls `stop()` when the job ends, then kills the actor.
"""

from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING, Optional, cast

from orchestrator.monitoring.gpu_probe import ProbeFactory
from orchestrator.monitoring.node_sampler import NodeSampler, open_sampler
from orchestrator.monitoring.samples import (
    MonitorItem,
    MonitorNote,
    MonitorStatus,
    NodeTargets,
)
from orchestrator.thread_priority import lower_thread_priority

if TYPE_CHECKING:
    from ray.actor import ActorHandle

    from launchers.actor_handles import RemoteMethod

MAX_BUFFERED = 10_000
"""Samples kept while the driver does not collect them (the oldest are dropped beyond this)."""
ACTOR_CONCURRENCY = 3  # take() waits while start() or stop() come in
JOIN_TIMEOUT_S = 10.0
"""How long stop() waits for a sample in progress (NVML calls take milliseconds; a hung driver may not)."""


class NodeMonitorActor:
    """Samples its node on a thread of its own; samples queue up until the driver takes them."""

    def __init__(self, probe_factory: ProbeFactory, interval_s: float):
        self.probe_factory = probe_factory
        self.interval_s = interval_s
        self._items: collections.deque[MonitorItem] = collections.deque(maxlen=MAX_BUFFERED)
        self._ready = threading.Condition()
        self._stopping = threading.Event()
        self._busy = threading.Lock()  # held while the sampler reads, so it is never swapped or closed mid-read
        self._sampler: Optional[NodeSampler] = None
        self._thread: Optional[threading.Thread] = None

    def start(self, targets: NodeTargets) -> MonitorStatus:
        """Watch these ranks and GPUs (again, after a restart of the group) and sample every interval_s."""
        sampler, status = open_sampler(targets, self.probe_factory, self.interval_s)
        with self._busy:
            previous, self._sampler = self._sampler, sampler
            if previous is not None:
                previous.close()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"orchestrator-monitor-{targets.node}", daemon=True)
            self._thread.start()
        return status

    def take(self, timeout_s: float) -> list[MonitorItem]:
        """Samples and notes queued so far: waits up to `timeout_s` for the first."""
        with self._ready:
            self._ready.wait_for(lambda: self._items or self._stopping.is_set(), timeout=timeout_s)
            return self._drain()

    def stop(self) -> list[MonitorItem]:
        """Stop sampling, take one last sample, release the GPUs; returns what was still queued."""
        self._stopping.set()
        with self._ready:
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
        with self._busy:
            sampler, self._sampler = self._sampler, None
            if sampler is not None:
                self._put(_read(sampler))
                sampler.close()
        with self._ready:
            return self._drain()

    def _run(self) -> None:
        lower_thread_priority()  # sampling gives way to the ranks on this node (orchestrator/thread_priority.py)
        # the Event's timeout is the sampling timer; stop() ends the wait at once
        while not self._stopping.wait(self.interval_s):
            with self._busy:
                item = None if self._sampler is None else _read(self._sampler)
            if item is not None:
                self._put(item)

    def _put(self, item: MonitorItem) -> None:
        with self._ready:
            self._items.append(item)
            self._ready.notify_all()

    def _drain(self) -> list[MonitorItem]:
        items = list(self._items)
        self._items.clear()
        return items


def _read(sampler: NodeSampler) -> MonitorItem:
    try:
        return sampler.sample()
    except Exception as error:  # a driver error must not end monitoring: say it and try again next time
        return MonitorNote(node=sampler.targets.node, text=f"sampling failed: {type(error).__name__}: {error}")


if TYPE_CHECKING:

    class MonitorHandle(ActorHandle[NodeMonitorActor]):
        """A NodeMonitorActor's handle, as the driver calls it (see launchers/actor_handles.py)."""

        start: RemoteMethod[[NodeTargets], MonitorStatus]
        take: RemoteMethod[[float], list[MonitorItem]]
        stop: RemoteMethod[[], list[MonitorItem]]


def start_monitor_actor(node_id: str, name: str, probe_factory: ProbeFactory, interval_s: float) -> MonitorHandle:
    """Create the monitor actor on node `node_id` (hard affinity: it must sample that node or none)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    handle = (
        ray.remote(NodeMonitorActor)
        .options(
            num_cpus=0,
            num_gpus=0,
            max_concurrency=ACTOR_CONCURRENCY,
            max_restarts=0,
            name=name,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        )
        .remote(probe_factory, interval_s)
    )
    # Ray's stubs type the result as the handle or the class, with untyped methods
    return cast("MonitorHandle", handle)
