"""The node's CPU and memory and the job's worker processes, read with psutil (imported lazily)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Mapping, Optional

from orchestrator.monitoring.samples import HostSample

if TYPE_CHECKING:  # only a type here: psutil is imported where it is used
    import psutil


class HostProbe:
    """Reads psutil for a set of ranks (world_rank -> worker pid) on this node."""

    def __init__(self, ranks: Mapping[int, int]):
        self.ranks = dict(ranks)
        self._processes: dict[int, psutil.Process] = {}
        self._children: dict[int, list[int]] = {}
        self._own: Optional[psutil.Process] = None

    def start(self) -> None:
        """Take the baseline that the first CPU percentages are measured against."""
        import psutil

        psutil.cpu_percent(interval=None)
        self._own = psutil.Process()
        for pid in self.ranks.values():
            for process in self._tree(pid, refresh=True):
                process.cpu_percent(interval=None)

    def sample(self, refresh_children: bool = True) -> HostSample:
        """CPU, RAM and, per rank, RSS and CPU of the worker's process tree (ranks that exited are left out).

        Finding a worker's children scans every process of the node (milliseconds), so the caller may
        keep the children found last time (`refresh_children=False`).
        """
        import psutil

        memory = psutil.virtual_memory()
        rss: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for world_rank, pid in self.ranks.items():
            reading = self._read_tree(pid, refresh_children)
            if reading is not None:
                rss[world_rank], cpu[world_rank] = reading
        own = None if self._own is None else self._own.cpu_times()
        return HostSample(
            time_s=time.monotonic(),
            cpu_percent=psutil.cpu_percent(interval=None),
            ram_used_bytes=int(memory.total - memory.available),
            ram_total_bytes=int(memory.total),
            rank_rss_bytes=rss,
            rank_cpu_percent=cpu,
            monitor_cpu_s=None if own is None else own.user + own.system,
        )

    def _read_tree(self, pid: int, refresh: bool) -> Optional[tuple[int, float]]:
        """(RSS bytes, CPU percent) of the worker's process tree; None when none of it is left."""
        import psutil

        rss, cpu, alive = 0, 0.0, False
        for process in self._tree(pid, refresh):
            try:
                rss += process.memory_info().rss
                cpu += process.cpu_percent(interval=None)
                alive = True
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return (rss, cpu) if alive else None

    def _tree(self, pid: int, refresh: bool) -> list[psutil.Process]:
        # the same Process objects every time: cpu_percent() measures against that object's last call
        import psutil

        root = self._process(pid)
        if root is None:
            return []
        if refresh or pid not in self._children:
            try:
                self._children[pid] = [child.pid for child in root.children(recursive=True)]
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._children[pid] = []
        return [root] + [process for process in map(self._process, self._children[pid]) if process is not None]

    def _process(self, pid: int) -> Optional[psutil.Process]:
        import psutil

        if pid not in self._processes:
            try:
                self._processes[pid] = psutil.Process(pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return None
        return self._processes[pid]
