"""The driver-side recorder: metric names and units, notes said once, the summary table."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest

from orchestrator.cli.console import Console
from orchestrator.config.schema import MonitorConfig
from orchestrator.lifecycle.rank_reports import StepReport
from orchestrator.monitoring.gpu_probe import GpuProcess, GpuSample
from orchestrator.monitoring.metric_names import SampleMetrics, sample_metrics
from orchestrator.monitoring.node_sampler import targets_by_node
from orchestrator.monitoring.routing import SUMMARY_ARTIFACT, SystemRecorder
from orchestrator.monitoring.samples import (
    HostSample,
    MonitorNote,
    MonitorStatus,
    NodeSample,
    NodeTargets,
)
from orchestrator.monitoring.summaries import MIB
from orchestrator.tracking.metrics_sink import InMemorySink
from tests.helpers import worker_spec

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


def test_cached_metric_names_give_what_sample_metrics_gives_in_its_order():
    names = SampleMetrics()
    bare = GpuSample(uuid="GPU-b", time_s=2.0, utilization_percent=5, gpm={"gpm_sm_util_percent": 1.0})
    samples = [
        NodeSample(node="node1", index=0, host=HOST, gpus={3: FULL, 0: bare}),
        NodeSample(node="node1", index=1, host=replace(HOST, monitor_cpu_s=None), gpus={0: FULL, 3: bare}),
        NodeSample(node="node7", index=0, host=replace(HOST, rank_rss_bytes={}, rank_cpu_percent={9: 1.0})),
    ]
    for sample in samples * 2:  # the second time from names made the first time
        assert list(names(sample).items()) == list(sample_metrics(sample).items())


def test_a_group_tags_each_node_with_its_ranks_and_a_restart_in_place_tags_nothing_again():
    recorder, _ = _recorder()
    specs = [
        replace(worker_spec(rank, world_size=6), node_rank=rank // 3, node_id=f"id{rank // 3}", cuda_device=rank % 3)
        for rank in range(6)
    ]
    specs = [replace(spec, node_ip=f"10.0.0.{spec.node_rank + 1}") for spec in specs]
    recorder.on_group(specs)
    assert recorder.sink.tags == {
        "monitor.node0.node_ip": "10.0.0.1",
        "monitor.node0.ray_node_id": "id0",
        "monitor.node1.node_ip": "10.0.0.2",
        "monitor.node1.ray_node_id": "id1",
        "monitor.node0.ranks": "0,1,2",
        "monitor.node1.ranks": "3,4,5",
    }
    assert [recorder.gpu_ranks(f"node{rank // 3}", rank % 3) for rank in range(6)] == [[rank] for rank in range(6)]
    recorder.sink.tags.clear()
    recorder.on_group(list(specs))  # the same ranks in the same places (a restart in place): nothing to tag again
    assert recorder.sink.tags == {}
    moved = [replace(spec, node_rank=0, node_id="id0", node_ip="10.0.0.1") for spec in specs[:4]]  # a resize
    recorder.on_group(moved)
    assert recorder.sink.tags == {
        "monitor.node0.node_ip": "10.0.0.1",
        "monitor.node0.ray_node_id": "id0",
        "monitor.node0.ranks": "0,1,2,3",
    }
    recorder.sink.tags.clear()
    recorder.on_group([*moved, replace(specs[4], node_ip="10.0.0.9")])  # node0 as it was: only node1 is tagged
    assert recorder.sink.tags == {
        "monitor.node1.node_ip": "10.0.0.9",
        "monitor.node1.ray_node_id": "id1",
        "monitor.node1.ranks": "4",
    }
    assert recorder.gpu_ranks("node0", 0) == [0, 3] and recorder.gpu_ranks("node1", 2) == []
    assert recorder.node_of(3) == "node0" and recorder.node_of(5) == "?"


def test_each_node_is_targeted_with_its_ranks_pids_and_gpus_in_the_order_nodes_first_appear():
    env = {"CUDA_VISIBLE_DEVICES": "4,5", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    specs = [
        replace(worker_spec(rank, world_size=5, env=env), node_rank=node_rank, node_id=f"id{node_rank}", pid=pid)
        for rank, node_rank, pid in [(0, 1, 100), (1, 1, None), (2, 0, 102), (3, 1, 103), (4, 0, 104)]
    ]
    targets = targets_by_node(specs)
    assert list(targets) == ["node1", "node0"]
    assert targets["node1"] == ("id1", NodeTargets("node1", {0: 100, 3: 103}, "4,5", "PCI_BUS_ID"))
    assert targets["node0"] == ("id0", NodeTargets("node0", {2: 102, 4: 104}, "4,5", "PCI_BUS_ID"))
