"""Real psutil readings: the node, and a rank's worker together with its child processes."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil

from orchestrator.monitor.host import HostProbe
from orchestrator.monitor.summarize import MIB
from tests.helpers import wait_until

CHILD_MIB = 200


def test_a_ranks_rss_includes_its_children_found_at_the_slow_cadence_and_exited_ranks_drop_out():
    probe = HostProbe({0: os.getpid(), 7: 2**22 + 12345})  # rank 7's pid does not exist
    probe.start()
    alone = probe.sample(refresh_children=True)
    assert 0 <= alone.cpu_percent <= 100
    assert 0 < alone.ram_used_bytes < alone.ram_total_bytes == psutil.virtual_memory().total
    assert set(alone.rank_rss_bytes) == {0} and alone.rank_rss_bytes[0] == psutil.Process().memory_info().rss
    own = psutil.Process().cpu_times()
    assert 0 < alone.monitor_cpu_s <= own.user + own.system  # this process is the "monitor" here
    code = f"import sys; block = bytearray({CHILD_MIB} * 2**20); block[::4096] = b'x' * len(block[::4096]); sys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        wait_until(lambda: psutil.Process(child.pid).memory_info().rss > CHILD_MIB * MIB, 30, "the child's memory")
        cached = probe.sample(refresh_children=False)  # the child is found only when children are looked for
        assert cached.rank_rss_bytes[0] < alone.rank_rss_bytes[0] + CHILD_MIB * MIB
        found = probe.sample(refresh_children=True)
        assert found.rank_rss_bytes[0] >= psutil.Process().memory_info().rss + CHILD_MIB * MIB
        assert found.rank_cpu_percent[0] >= 0
    finally:
        child.communicate(input=b"")
    gone = probe.sample(refresh_children=False)  # a child that exited no longer counts
    assert gone.rank_rss_bytes[0] < found.rank_rss_bytes[0] - CHILD_MIB * MIB // 2
