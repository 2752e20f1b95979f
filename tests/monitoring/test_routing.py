"""The driver-side recorder: metric names and units, notes said once, the summary table."""

from __future__ import annotations

import io

import pytest

from orchestrator.cli.console import Console
from orchestrator.config.schema import MonitorConfig
from orchestrator.lifecycle.rank_reports import StepReport
from orchestrator.monitoring.gpu_probe import GpuProcess, GpuSample
from orchestrator.monitoring.routing import SUMMARY_ARTIFACT, SystemRecorder
from orchestrator.monitoring.samples import (
    HostSample,
    MonitorNote,
    MonitorStatus,
    NodeSample,
)
from orchestrator.monitoring.summaries import MIB
from orchestrator.tracking.metrics_sink import InMemorySink

HOST = HostSample(
    time_s=1.0,
    cpu_percent=55.5,
    ram_used_bytes=3000 * MIB,
    ram_total_bytes=8000 * MIB,
    rank_rss_bytes={4: 700 * MIB},
    rank_cpu_percent={4: 98.0},
    monitor_cpu_s=1.25,
)
FULL = GpuSample(
    uuid="GPU-a",
    time_s=1.0,
    utilization_percent=87,
    memory_utilization_percent=40,
    memory_used_bytes=2048 * MIB,
    memory_total_bytes=81559 * MIB,
    power_w=350.5,
    power_limit_w=700,
    temperature_c=61,
    sm_clock_mhz=1980,
    throttle_reasons=4,
    ecc_corrected_errors=2,
    ecc_uncorrected_errors=0,
    processes=(GpuProcess(11, 1024 * MIB), GpuProcess(12, None)),
    pcie_tx_kb_s=1500,
    pcie_rx_kb_s=2500,
    gpm={"gpm_sm_util_percent": 61.5, "gpm_tensor_util_percent": 20},
)


def _recorder():
    stream = io.StringIO()
    return SystemRecorder(MonitorConfig(), InMemorySink(), Console(stream, interactive=False)), stream


def test_a_sample_becomes_system_metrics_with_units_in_their_names_at_the_latest_step():
    recorder, _ = _recorder()
    recorder.on_step(StepReport(world_rank=4, step=120, total_steps=500, epoch=0, step_time_s=0.1, steps_timed=10))
    recorder.on_step(StepReport(world_rank=5, step=110, total_steps=500, epoch=0, step_time_s=0.1, steps_timed=10))
    recorder.on_item(NodeSample(node="node1", index=0, host=HOST, gpus={3: FULL}))
    logged = {name: (step, value) for step, name, value in recorder.sink.metrics}
    gpu = "system/node1/gpu3/"
    assert logged == {
        "system/node1/cpu_percent": (120, 55.5),
        "system/node1/ram_used_mib": (120, 3000),
        "system/node1/ram_total_mib": (120, 8000),
        "system/node1/rank4_rss_mib": (120, 700),
        "system/node1/rank4_cpu_percent": (120, 98),
        "system/node1/monitor_cpu_s": (120, 1.25),
        gpu + "utilization_percent": (120, 87),
        gpu + "memory_utilization_percent": (120, 40),
        gpu + "memory_used_mib": (120, 2048),
        gpu + "memory_total_mib": (120, 81559),
        gpu + "power_w": (120, 350.5),
        gpu + "power_limit_w": (120, 700),
        gpu + "temperature_c": (120, 61),
        gpu + "sm_clock_mhz": (120, 1980),
        gpu + "throttle_reasons": (120, 4),
        gpu + "ecc_corrected_errors": (120, 2),
        gpu + "ecc_uncorrected_errors": (120, 0),
        gpu + "processes": (120, 2),
        gpu + "processes_memory_mib": (120, 1024),
        gpu + "pcie_tx_kb_s": (120, 1500),
        gpu + "pcie_rx_kb_s": (120, 2500),
        gpu + "gpm_sm_util_percent": (120, 61.5),
        gpu + "gpm_tensor_util_percent": (120, 20),
    }
    bare = GpuSample(uuid="GPU-b", time_s=2.0, utilization_percent=5)  # a MIG instance offers little
    recorder.on_item(NodeSample(node="node1", index=1, host=HOST, gpus={0: bare}))
    assert [name for _, name, _ in recorder.sink.metrics if name.startswith("system/node1/gpu0/")] == [
        "system/node1/gpu0/utilization_percent"
    ]


def test_notes_are_said_once_and_status_tags_name_hosts_and_gpus():
    recorder, stream = _recorder()
    off = "GPU monitoring off: NVML is not available on this node (Driver Not Loaded)"
    recorder.on_status(MonitorStatus(node="node0", hostname="gpu-a", notes=(off,)))
    recorder.on_status(MonitorStatus(node="node1", hostname="gpu-b", notes=(off,)))
    recorder.on_item(MonitorNote(node="node1", text="sampling failed: NVMLError_GpuIsLost: GPU is lost"))
    recorder.on_item(MonitorNote(node="node1", text="sampling failed: NVMLError_GpuIsLost: GPU is lost"))
    assert stream.getvalue().splitlines() == [
        f"monitor: {off}",
        "monitor: node1: sampling failed: NVMLError_GpuIsLost: GPU is lost",
    ]
    assert recorder.sink.tags == {
        "monitor.node0.hostname": "gpu-a",
        "monitor.node0.notes": off,
        "monitor.node1.hostname": "gpu-b",
        "monitor.node1.notes": off,
    }


def test_the_summary_is_logged_per_node_printed_as_a_table_and_stored_as_an_artifact():
    recorder, stream = _recorder()
    for index, (time_s, power) in enumerate([(0.0, 300.0), (3600.0, 500.0)]):
        gpu = GpuSample(
            uuid="GPU-a",
            time_s=time_s,
            utilization_percent=40 + 40 * index,
            memory_used_bytes=(1000 + index) * MIB,
            power_w=power,
        )
        recorder.on_item(NodeSample(node="node0", index=index, host=HOST, gpus={0: gpu}))
    recorder.finish()
    final = {name: value for _, name, value in recorder.sink.metrics}
    assert final["system/node0/gpu0/energy_wh"] == pytest.approx(400.0)
    assert (
        final["system/node0/gpu0/utilization_percent_mean"] == 60
        and final["system/node0/gpu0/utilization_percent_peak"] == 80
    )
    assert final["system/node0/gpu0/memory_used_mib_peak"] == 1001 and final["system/node0/cpu_percent_peak"] == 55.5
    assert final["system/node0/rank4_rss_mib_peak"] == 700 and final["monitor/straggler_episodes"] == 0
    table = recorder.sink.texts[SUMMARY_ARTIFACT]
    assert "node0/gpu0" in table and "400.000" in table and "1.25  4: 700" in table
    assert stream.getvalue().startswith("system summary:\n  GPU ")
