"""CPU priority of the orchestrator's own background threads: training gets the cores first.

On a machine whose cores the ranks fill (2 ranks on 2 cores here), a thread of the driver that wakes
to write metrics takes a core from a rank, and the other rank then waits for it at the next
all-reduce: the cost is paid twice. Bookkeeping that is not on the training's path (metric and tag
writes, artifact uploads, the node monitor's sampling) runs at a higher nice value, so it runs in the
ranks' idle moments and gives way when they are ready. It still runs (the scheduler gives a niced
thread a smaller share, not none), so buffers drain and samples are taken.
"""

from __future__ import annotations

import os
import sys
import threading

BACKGROUND_NICE = 10
"""How much less important a background thread is than training (nice +10: about a tenth of a core's
share while a rank competes for it)."""

_MAX_NICE = 19


def lower_thread_priority(increment: int = BACKGROUND_NICE) -> bool:
    """Raise the calling thread's nice value by `increment` (up to 19); False where that cannot be done.

    Linux schedules threads as tasks with their own nice value, so only the calling thread changes;
    elsewhere (where the value is per process) nothing changes. Lowering one's own priority needs no
    privilege.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        thread_id = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread_id)
        os.setpriority(os.PRIO_PROCESS, thread_id, min(current + increment, _MAX_NICE))
    except OSError:
        return False
    return True
