"""Background threads give way to training: their nice value rises, the caller's other threads keep theirs."""

from __future__ import annotations

import os
import sys
import threading

from orchestrator.thread_priority import BACKGROUND_NICE, lower_thread_priority
from orchestrator.tracking.metric_writer import MetricValue, MetricWriter

LINUX = sys.platform.startswith("linux")


def _nice(thread_id: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, thread_id)


def test_only_the_calling_thread_is_lowered():
    main_before = _nice(threading.get_native_id())
    seen: dict = {}

    def background() -> None:
        seen["before"] = _nice(threading.get_native_id())
        seen["lowered"] = lower_thread_priority()
        seen["after"] = _nice(threading.get_native_id())

    thread = threading.Thread(target=background)
    thread.start()
    thread.join()
    # elsewhere the value is per process: lowering it would slow the ranks' own process, so nothing changes
    expected = min(seen["before"] + BACKGROUND_NICE, 19) if LINUX else seen["before"]
    assert seen["lowered"] == LINUX and seen["after"] == expected
    assert _nice(threading.get_native_id()) == main_before


def test_the_metric_writers_thread_runs_lowered_and_still_writes():
    written: list = []
    writer = MetricWriter(
        lambda batch, timeout_s: written.extend(batch), max_outage_s=5.0, is_transient=lambda error: False
    ).start()
    try:
        writer.put([MetricValue("train/loss", 1.0, 0, 1)])
        assert writer.flush(10.0)
        [thread] = [thread for thread in threading.enumerate() if thread.name == writer.name]
        main = _nice(threading.get_native_id())
        assert _nice(thread.native_id) == (min(main + BACKGROUND_NICE, 19) if LINUX else main)
    finally:
        writer.close(5.0)
    assert [value.key for value in written] == ["train/loss"]
