"""Monitoring on the session's real Ray cluster, recorded in a real MLflow store on disk.

Scripted GPUs go through the real monitor actor, the JobMonitor observer and the RunRecorder; a real
CPU job runs with monitoring on; on a GPU machine (`pytest -m gpu`) a real GPU job logs what NVML reads.
"""

from __future__ import annotations

import functools
import io
import operator
import os
import uuid

import pytest

from launchers.jobs.job_runner import run_job
from launchers.monitoring.job_monitoring import JobMonitor, job_observers
from orchestrator.cli.console import Console
from orchestrator.config.schema import MonitorConfig, TrackingConfig
from orchestrator.lifecycle.controller import JobOutcome
from orchestrator.lifecycle.rank_reports import StepReport
from orchestrator.monitoring.gpu_devices import GpuDevice
from orchestrator.monitoring.gpu_probe import GpuSample, ScriptedProbe
from orchestrator.monitoring.summaries import MIB
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.tracking.metrics_sink import InMemorySink
from orchestrator.tracking.run_recorder import RunRecorder
from tests.helpers import assert_no_job_resources, compose_job, live_actors, wait_until

UUID_LOW_SLOT = "GPU-1b000000-0000-0000-0000-000000000000"
UUID_HIGH_SLOT = "GPU-9a000000-0000-0000-0000-000000000000"
DEVICES = [
    GpuDevice(uuid=UUID_HIGH_SLOT, pci_bus_id="00000000:9A:00.0", name="NVIDIA H100"),
    GpuDevice(uuid=UUID_LOW_SLOT, pci_bus_id="00000000:1B:00.0", name="NVIDIA H100"),
]
TICKS = 16


def _script() -> dict[str, list[GpuSample]]:
    """A busy GPU (power ramping 100 -> 250 W) and an idle one (50 W), read every 10 s of GPU time."""
    busy = [
        GpuSample(
            uuid=UUID_HIGH_SLOT,
            time_s=10.0 * tick,
            utilization_percent=80 + 10 * (tick % 3),
            memory_used_bytes=tick * 1024 * MIB,
            power_w=100.0 + 10 * tick,
            gpm={"gpm_sm_util_percent": 40.0},
        )
        for tick in range(TICKS)
    ]
    idle = [
        GpuSample(
            uuid=UUID_LOW_SLOT, time_s=10.0 * tick, utilization_percent=10, memory_used_bytes=512 * MIB, power_w=50.0
        )
        for tick in range(TICKS)
    ]
    return {UUID_HIGH_SLOT: busy, UUID_LOW_SLOT: idle}


def _specs(node_id: str, node_ip: str) -> list[WorkerSpec]:
    # Ray gave rank 0 the GPU in PCI slot 1 and rank 1 the one in slot 0: "1,0" under PCI_BUS_ID order
    env = {"CUDA_VISIBLE_DEVICES": "1,0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    return [
        WorkerSpec(
            world_rank=rank,
            local_rank=rank,
            node_rank=0,
            world_size=2,
            local_world_size=2,
            bundle_index=0,
            node_id=node_id,
            node_ip=node_ip,
            backend="nccl",
            torch_threads=1,
            env=env,
            cuda_device=rank,
            pid=pid,
        )
        for rank, pid in enumerate([os.getpid(), os.getppid()])
    ]


def _step(rank: int, step: int, reach_sync_s: float) -> StepReport:
    return StepReport(
        world_rank=rank,
        step=step,
        total_steps=1000,
        epoch=0,
        step_time_s=0.5,
        steps_timed=10,
        reach_sync_s=reach_sync_s,
    )


def _history(client, run_id, name) -> list[float]:
    return [metric.value for metric in client.get_metric_history(run_id, name)]


def test_scripted_gpus_through_the_monitor_actor_into_mlflow_with_warnings_and_a_summary(ray_cluster, tmp_path):
    import ray
    from mlflow import MlflowClient

    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="monitoring")
    sink = RunRecorder.create(tracking, {}, {})
    stream = io.StringIO()
    name = f"orchestrator-monitor-test-{uuid.uuid4().hex[:8]}"
    monitor = JobMonitor(
        MonitorConfig(interval_s=0.1),
        sink,
        Console(stream, interactive=False),
        name,
        probe_factory=functools.partial(ScriptedProbe, DEVICES, _script()),
    )
    monitor.group_started(_specs(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()))
    step = 0
    try:

        def pumped(count: int) -> bool:  # ranks report in step; the observer collects samples on reports
            nonlocal step
            step += 1
            monitor.report(step % 2, _step(step % 2, step, 0.1))
            gpu = monitor.recorder.gpus.get(("node0", 1))
            return gpu is not None and gpu.samples >= count

        wait_until(lambda: pumped(TICKS), 60, f"{TICKS} scripted samples to reach the driver")
        for reach_sync_s in [0.3] * 5 + [0.1] * 5:  # rank 1 becomes a straggler, then recovers
            step += 1
            monitor.report(0, _step(0, step, 0.1))
            monitor.report(1, _step(1, step, reach_sync_s))
    finally:
        monitor.job_ended(JobOutcome(status="FINISHED"))
    sink.finish("FINISHED")
    assert monitor.failure is None
    wait_until(lambda: not [a for a in live_actors() if (a.name or "").startswith(name)], 15, "the monitor to die")

    client, run_id = MlflowClient(tracking.uri), sink.run_id
    run = client.get_run(run_id)
    metrics, tags = run.data.metrics, run.data.tags
    # gpu<i> is cuda:<i> of the ranks: "1,0" under PCI order makes gpu0 the GPU in the higher slot
    assert tags["monitor.node0.gpu0"] == f"{UUID_HIGH_SLOT} NVIDIA H100"
    assert tags["monitor.node0.gpu1"] == f"{UUID_LOW_SLOT} NVIDIA H100"
    assert _history(client, run_id, "system/node0/gpu0/utilization_percent") == [
        80 + 10 * (t % 3) for t in range(TICKS)
    ]
    assert _history(client, run_id, "system/node0/gpu1/power_w") == [50.0] * TICKS
    assert sorted(m for m in metrics if m.startswith("system/node0/gpu0/")) == sorted(
        f"system/node0/gpu0/{m}"
        for m in [
            "utilization_percent",
            "memory_used_mib",
            "power_w",
            "gpm_sm_util_percent",
            "utilization_percent_mean",
            "utilization_percent_peak",
            "memory_used_mib_peak",
            "power_w_mean",
            "energy_wh",
            "gpm_sm_util_percent_mean",
        ]
    )
    assert metrics["system/node0/gpu0/energy_wh"] == pytest.approx((100 + 250) / 2 * 150 / 3600)
    assert metrics["system/node0/gpu1/energy_wh"] == pytest.approx(50 * 150 / 3600)
    assert metrics["system/node0/gpu0/utilization_percent_mean"] == pytest.approx((6 * 80 + 5 * 90 + 5 * 100) / 16)
    assert metrics["system/node0/gpu0/utilization_percent_peak"] == 100
    assert metrics["system/node0/gpu0/memory_used_mib_peak"] == 15 * 1024
    assert metrics["system/node0/rank0_rss_mib"] > 0 and metrics["system/node0/rank1_rss_mib_peak"] > 0
    assert len(_history(client, run_id, "system/node0/cpu_percent")) >= TICKS
    monitor_cpu = _history(client, run_id, "system/node0/monitor_cpu_s")  # the actor's own cost, start-up included
    assert monitor_cpu == sorted(monitor_cpu) and monitor_cpu[-1] > 0.1

    console = stream.getvalue()
    assert console.count("warning: low GPU utilization: node0/gpu1 (rank 1) averaged 10.0% utilization") == 1
    assert _history(client, run_id, "monitor/node0/gpu1/low_util") == [1.0]
    assert "node0/gpu1 (rank 1) averaged 10.0%" in tags["monitor.low_util.node0.gpu1"]
    assert console.count("warning: straggler: rank 1 on node0 takes 0.3000 s per step to reach gradient sync") == 1
    assert console.count("monitor: rank 1 on node0 is back within monitor.straggler_ratio=1.2") == 1
    assert _history(client, run_id, "monitor/rank1/straggler") == [1.0, 0.0]
    assert "1.50x the median over ranks (0.2000 s)" in tags["monitor.straggler.rank1"]
    assert "monitor/rank0/straggler" not in metrics
    assert (metrics["monitor/straggler_episodes"], metrics["monitor/low_util_episodes"]) == (1, 1)
    assert "system summary:" in console and "node0/gpu0" in console


def test_a_probe_that_fails_on_its_node_drops_that_monitor_with_a_warning_not_the_job(ray_cluster, tmp_path):
    import ray

    stream = io.StringIO()
    name = f"orchestrator-monitor-test-{uuid.uuid4().hex[:8]}"
    broken = functools.partial(operator.truediv, 1, 0)  # raises ZeroDivisionError on the node
    monitor = JobMonitor(
        MonitorConfig(interval_s=0.1), InMemorySink(), Console(stream, interactive=False), name, probe_factory=broken
    )
    monitor.group_started(_specs(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()))
    try:
        wait_until(lambda: monitor.report(0, _step(0, 1, 0.1)) or not monitor.actors, 60, "the monitor's start to fail")
    finally:
        monitor.job_ended(JobOutcome(status="FINISHED"))
    assert monitor.failure is None
    assert stream.getvalue().splitlines() == [
        "warning: node0 is no longer monitored: its monitor failed: ZeroDivisionError: division by zero"
    ]
    wait_until(lambda: not [a for a in live_actors() if (a.name or "").startswith(name)], 15, "the monitor to die")


def test_a_restarted_group_keeps_the_monitors_of_its_nodes_and_stops_those_of_nodes_it_left(ray_cluster):
    import dataclasses

    import ray

    name = f"orchestrator-monitor-test-{uuid.uuid4().hex[:8]}"
    sink = InMemorySink()
    monitor = JobMonitor(MonitorConfig(interval_s=0.1), sink, Console(io.StringIO(), interactive=False), name)
    cpu_specs = [
        dataclasses.replace(spec, env={}, cuda_device=None)
        for spec in _specs(ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address())
    ]
    step = 0

    def samples_of(node: str, count: int) -> bool:
        nonlocal step
        step += 1
        monitor.report(0, _step(0, step, 0.1))
        return len(sink.series(f"system/{node}/cpu_percent")) >= count

    try:
        monitor.group_started(cpu_specs)
        first = monitor.actors["node0"]
        wait_until(lambda: samples_of("node0", 3), 60, "samples from node0")
        monitor.group_started(cpu_specs)  # a restart on the same node: the monitor stays and is re-targeted
        assert monitor.actors["node0"] is first
        moved = [dataclasses.replace(spec, node_rank=1) for spec in cpu_specs]  # now only "node1" is used
        monitor.group_started(moved)
        assert list(monitor.actors) == ["node1"]
        wait_until(lambda: samples_of("node1", 3), 60, "samples from node1")
    finally:
        monitor.job_ended(JobOutcome(status="FINISHED"))
    assert monitor.failure is None and monitor.actors == {}
    assert sink.tags["monitor.node1.ranks"] == "0,1"
    wait_until(lambda: not [a for a in live_actors() if (a.name or "").startswith(name)], 15, "the monitors to die")


def test_a_cpu_job_logs_node_and_worker_memory_and_its_monitor_goes_with_it(ray_cluster, tmp_path):
    from mlflow import MlflowClient

    overrides = [
        "model=mlp",
        "data=synthetic",
        "trainer.max_steps=100",
        "monitor.interval_s=0.5",
        "tracking.log_model=false",
    ]
    job = compose_job(overrides, tmp_path)
    stream = io.StringIO()
    summary = run_job(job, Console(stream, interactive=False), overrides)
    assert summary.outcome.status == "FINISHED", summary.outcome.error
    run = MlflowClient(job.tracking.uri).get_run(summary.run_id)
    metrics = run.data.metrics
    assert 0 <= metrics["system/node0/cpu_percent"] <= 100 and metrics["system/node0/ram_used_mib"] > 0
    assert metrics["system/node0/rank0_rss_mib"] > 50 and metrics["system/node0/rank1_rss_mib"] > 50  # torch loaded
    assert metrics["system/node0/rank1_rss_mib_peak"] >= metrics["system/node0/rank1_rss_mib"]
    assert not [name for name in metrics if "/gpu" in name]  # a CPU job never opens NVML
    assert run.data.tags["monitor.node0.ranks"] == "0,1" and run.data.tags["monitor.node0.hostname"]
    assert "system summary:" in stream.getvalue() and "GPU monitoring off" not in stream.getvalue()
    assert_no_job_resources()


def test_monitor_enabled_false_runs_no_observer(tmp_path):
    job = compose_job(["model=mlp", "monitor.enabled=false"], tmp_path)
    assert job_observers(job, sink=None, console=None, job_name="x") == []
    assert [type(o).__name__ for o in job_observers(compose_job(["model=mlp"], tmp_path), None, None, "x")] == [
        "JobMonitor"
    ]


@pytest.mark.gpu
def test_a_gpu_job_logs_utilization_memory_power_and_energy(ray_cluster, tmp_path):
    from mlflow import MlflowClient

    overrides = [
        "model=cnn",
        "data=synthetic",
        "data.input_shape=[3,64,64]",
        "data.num_samples=16384",
        "data.batch_size=256",
        "trainer.max_steps=400",
        "scaling.num_workers=1",
        "scaling.gpus_per_worker=1",
        "monitor.interval_s=0.5",
        "tracking.log_model=false",
    ]
    job = compose_job(overrides, tmp_path)
    summary = run_job(job, Console(io.StringIO(), interactive=False), overrides)
    assert summary.outcome.status == "FINISHED", summary.outcome.error
    client = MlflowClient(job.tracking.uri)
    metrics = client.get_run(summary.run_id).data.metrics
    print("\n" + "\n".join(f"{name} = {value:.3f}" for name, value in sorted(metrics.items()) if "/gpu0/" in name))
    assert max(_history(client, summary.run_id, "system/node0/gpu0/utilization_percent")) > 0
    assert metrics["system/node0/gpu0/memory_used_mib_peak"] > 0 and metrics["system/node0/gpu0/power_w_mean"] > 0
    assert metrics["system/node0/gpu0/energy_wh"] > 0
    assert_no_job_resources()
