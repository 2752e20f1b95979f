"""Real psutil readings: the node, and a rank's worker process together with its child processes."""

from __future__ import annotations

import subprocess
import sys

import psutil

from orchestrator.monitoring.host_probe import HostProbe
from orchestrator.monitoring.summaries import MIB
from tests.helpers import wait_until

CHILD_MIB = 200
CHILD = (
    f"import sys; block = bytearray({CHILD_MIB} * 2**20); block[::4096] = b'x' * len(block[::4096]); sys.stdin.read()"
)
# a stand-in worker: on its first input line it starts a child holding CHILD_MIB, on the second it ends
WORKER = (
    "import subprocess, sys\n"
    "sys.stdin.readline()\n"
    f"child = subprocess.Popen([sys.executable, '-c', {CHILD!r}], stdin=subprocess.PIPE)\n"
    "sys.stdin.readline()\n"
    "child.communicate(b'')\n"
)


def test_a_ranks_rss_includes_its_children_found_at_the_slow_cadence_and_an_exited_rank_drops_out():
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE)
    try:
        probe = HostProbe({3: worker.pid})
        probe.start()
        alone = probe.sample(refresh_children=True)
        assert 0 <= alone.cpu_percent <= 100 and alone.rank_cpu_percent[3] >= 0
        assert 0 < alone.ram_used_bytes < alone.ram_total_bytes == psutil.virtual_memory().total
        assert abs(alone.rank_rss_bytes[3] - psutil.Process(worker.pid).memory_info().rss) < MIB
        own = psutil.Process().cpu_times()
        assert 0 < alone.monitor_cpu_s <= own.user + own.system  # this test process plays the monitor
        worker.stdin.write(b"spawn\n")
        worker.stdin.flush()
        wait_until(
            lambda: sum(child.memory_info().rss for child in psutil.Process(worker.pid).children()) > CHILD_MIB * MIB,
            30,
            "the worker's child to hold its memory",
        )
        cached = probe.sample(refresh_children=False)  # children are looked for only at the slow cadence
        assert cached.rank_rss_bytes[3] < alone.rank_rss_bytes[3] + CHILD_MIB * MIB // 2
        found = probe.sample(refresh_children=True)
        assert found.rank_rss_bytes[3] > alone.rank_rss_bytes[3] + CHILD_MIB * MIB
    finally:
        worker.communicate(input=b"end\n")
    assert probe.sample(refresh_children=False).rank_rss_bytes == {}  # the rank's processes are gone
