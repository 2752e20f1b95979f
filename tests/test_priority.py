"""Background threads give way to training: their nice value rises, the caller's other threads keep theirs."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from orchestrator.metrics.writer import MetricValue, MetricWriter
from orchestrator.priority import BACKGROUND_NICE, lower_thread_priority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


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
    assert seen["lowered"] and seen["after"] == min(seen["before"] + BACKGROUND_NICE, 19)
    assert _nice(threading.get_native_id()) == main_before


def test_the_metric_writers_thread_runs_lowered_and_still_writes():
    written: list = []
    writer = MetricWriter(lambda batch, timeout_s: written.extend(batch), max_outage_s=5.0,
                          is_transient=lambda error: False).start()
    try:
        writer.put([MetricValue("train/loss", 1.0, 0, 1)])
        assert writer.flush(10.0)
        [thread] = [thread for thread in threading.enumerate() if thread.name == writer.name]
        assert _nice(thread.native_id) == min(_nice(threading.get_native_id()) + BACKGROUND_NICE, 19)
    finally:
        writer.close(5.0)
    assert [value.key for value in written] == ["train/loss"]
