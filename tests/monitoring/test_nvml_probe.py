"""The NVML probe: the no-NVML path here, the real driver on a GPU machine (`pytest -m gpu`), and the
probe's use of pynvml's calls, structs and error codes against a stand-in driver."""

from __future__ import annotations

import ctypes
import os
import time
from types import SimpleNamespace

import pynvml
import pytest

from orchestrator.monitoring.gpu_devices import resolve_visible
from orchestrator.monitoring.gpu_probe import NullProbe
from orchestrator.monitoring.node_sampler import open_sampler
from orchestrator.monitoring.nvml_probe import GPM_METRICS, NvmlProbe, open_nvml_probe
from orchestrator.monitoring.samples import NodeTargets


def test_without_a_driver_gpu_monitoring_is_off_with_one_reason_and_host_sampling_goes_on():
    probe = open_nvml_probe()
    if isinstance(probe, NvmlProbe):
        probe.close()
        pytest.skip("this machine has a working NVML driver")
    assert isinstance(probe, NullProbe) and probe.devices() == () and probe.sample(["GPU-x"], True) == []
    assert probe.note.startswith("GPU monitoring off: NVML is not available on this node (")
    sampler, status = open_sampler(
        NodeTargets(node="node0", ranks={0: os.getpid()}, visible_devices="0"), open_nvml_probe, interval_s=5.0
    )
    assert status.gpus == () and status.notes == (probe.note,)
    sample = sampler.sample()
    assert sample.gpus == {} and sample.host.rank_rss_bytes[0] > 0
    sampler.close()


@pytest.mark.gpu
def test_the_real_probe_maps_cuda_device_0_by_uuid_and_reads_a_busy_gpu():
    import torch

    probe = open_nvml_probe()
    assert isinstance(probe, NvmlProbe), probe.note
    try:
        devices = probe.devices()
        mapped = resolve_visible("0", devices, os.environ.get("CUDA_DEVICE_ORDER")).uuids[0]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:  # torch's cuda:0 is the first visible device
            mapped = resolve_visible(visible, devices, os.environ.get("CUDA_DEVICE_ORDER")).uuids[0]
        assert mapped == f"GPU-{torch.cuda.get_device_properties(0).uuid}"
        probe.sample([mapped], detail=True)  # the first GPM sample only opens the interval
        matrix = torch.randn(8192, 8192, device="cuda")
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            matrix = (matrix @ matrix).clamp_(-1, 1)
        torch.cuda.synchronize()
        [busy] = probe.sample([mapped], detail=True)
        print(f"\nNVML on {devices[0].name}: {busy}\nGPM offered: {probe.gpm_supported(mapped)}")
        assert busy.utilization_percent > 0 and busy.memory_used_bytes > 8192 * 8192 * 4
        assert busy.power_w > 0 and busy.power_limit_w >= busy.power_w * 0.5 and busy.temperature_c > 0
        assert busy.sm_clock_mhz > 0 and busy.throttle_reasons is not None
        assert any(process.pid for process in busy.processes)
        if probe.gpm_supported(mapped):
            assert busy.gpm.get("gpm_sm_util_percent", 0) > 0
    finally:
        probe.close()


class StandInNvml:
    """pynvml's own constants, structs and error classes; device calls answered from a table.

    Any pynvml function the probe calls that this class does not answer reaches the real pynvml,
    which fails without a driver: the probe may only use the calls listed here.
    """

    GPUS = [
        dict(uuid="GPU-0000", bus=b"00000000:1B:00.0", name="NVIDIA H100 80GB HBM3", cc=(9, 0), gpm=True),
        dict(uuid="GPU-1111", bus=b"00000000:2C:00.0", name="Tesla V100", cc=(7, 0), gpm=False),
        dict(uuid="GPU-2222", bus=b"00000000:3D:00.0", name="NVIDIA A100", cc=(8, 0), gpm=False, mig=True),
    ]

    def __init__(self):
        self.gpm_taken: dict[int, int] = {}  # address of a GPM sample buffer -> when it was last filled
        self.ticks = 0
        self.freed = 0
        self.shutdowns = 0

    def __getattr__(self, name):
        return getattr(pynvml, name)

    def _fail(self, code):
        raise pynvml.NVMLError(code)

    def nvmlSystemGetDriverVersion(self):
        return "550.54.15"

    def nvmlDeviceGetCount(self):
        return len(self.GPUS)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return next(i for i, gpu in enumerate(self.GPUS) if gpu["uuid"] == uuid) if uuid != "MIG-2222-a" else 20

    def nvmlDeviceGetUUID(self, handle):
        return self.GPUS[handle]["uuid"] if handle < 10 else "MIG-2222-a"

    def nvmlDeviceGetPciInfo(self, handle):
        return SimpleNamespace(busId=self.GPUS[handle]["bus"])

    def nvmlDeviceGetName(self, handle):
        return self.GPUS[handle]["name"]

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        return self.GPUS[handle]["cc"]

    def nvmlDeviceGetNumGpuCores(self, handle):
        return 16896 if handle == 0 else self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetMigMode(self, handle):
        return [1, 1] if self.GPUS[handle].get("mig") else self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, slot):
        return 20 if slot == 0 else self._fail(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetGpuInstanceId(self, handle):
        return 3

    def nvmlDeviceGetComputeInstanceId(self, handle):
        return 0

    def nvmlDeviceIsMigDeviceHandle(self, handle):
        return ctypes.c_uint(1 if handle == 20 else 0)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=97 - handle, memory=41)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(total=80 << 30, free=20 << 30, used=60 << 30)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 612_345

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000 if handle == 0 else self._fail(pynvml.NVML_ERROR_NO_PERMISSION)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 64 if sensor == pynvml.NVML_TEMPERATURE_GPU else None

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return 1980 if clock == pynvml.NVML_CLOCK_SM else None

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        # an older driver (handle 1) lacks the new name: the probe must fall back to throttle reasons
        return (
            pynvml.nvmlClocksEventReasonSwPowerCap if handle == 0 else self._fail(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        )

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        return pynvml.nvmlClocksThrottleReasonHwSlowdown

    def nvmlDeviceGetTotalEccErrors(self, handle, error_type, counter):
        assert counter == pynvml.NVML_VOLATILE_ECC
        if handle != 0:
            self._fail(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return 5 if error_type == pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED else 0

    def nvmlDeviceGetComputeRunningProcesses_v3(self, handle):
        return [SimpleNamespace(pid=4242, usedGpuMemory=1 << 30), SimpleNamespace(pid=4343, usedGpuMemory=None)]

    def nvmlDeviceGetPcieThroughput(self, handle, counter):
        return 1000 if counter == pynvml.NVML_PCIE_UTIL_TX_BYTES else 2000

    def nvmlGpmQueryDeviceSupport(self, handle):
        return SimpleNamespace(isSupportedDevice=1 if self.GPUS[handle]["gpm"] else 0)

    def nvmlGpmSampleAlloc(self):
        return ctypes.pointer(pynvml.struct_c_nvmlGpmSample_t())

    def nvmlGpmSampleFree(self, sample):
        self.freed += 1

    def nvmlGpmSampleGet(self, handle, sample):
        self.ticks += 1
        self.gpm_taken[ctypes.addressof(sample.contents)] = self.ticks

    def nvmlGpmMetricsGet(self, request):
        assert request.version == pynvml.NVML_GPM_METRICS_GET_VERSION
        earlier = self.gpm_taken[ctypes.addressof(request.sample1.contents)]
        later = self.gpm_taken[ctypes.addressof(request.sample2.contents)]
        assert earlier < later, "sample1 must be the earlier GPM sample"
        for slot in range(request.numMetrics):
            metric = request.metrics[slot]
            if metric.metricId == pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL:
                metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            else:
                metric.nvmlReturn, metric.value = pynvml.NVML_SUCCESS, metric.metricId + later / 100
        return request

    def nvmlShutdown(self):
        self.shutdowns += 1


def test_devices_are_listed_with_bus_ids_models_and_mig_instances():
    probe = NvmlProbe.connected(StandInNvml())
    h100, v100, a100 = probe.devices()
    assert (h100.uuid, h100.pci_bus_id, h100.name, h100.compute_capability, h100.cores) == (
        "GPU-0000",
        "00000000:1B:00.0",
        "NVIDIA H100 80GB HBM3",
        (9, 0),
        16896,
    )
    assert v100.cores == 0 and v100.mig == () and h100.mig == ()
    assert [(m.uuid, m.gpu_instance_id, m.compute_instance_id) for m in a100.mig] == [("MIG-2222-a", 3, 0)]
    assert probe.note == "NVML driver 550.54.15"


def test_readings_in_our_units_absent_ones_empty_and_gpm_between_consecutive_samples():
    nvml = StandInNvml()
    probe = NvmlProbe.connected(nvml)
    h100, v100 = probe.sample(["GPU-0000", "GPU-1111"], detail=False)
    assert (h100.utilization_percent, h100.memory_utilization_percent, h100.memory_used_bytes) == (97, 41, 60 << 30)
    assert (h100.power_w, h100.power_limit_w, h100.temperature_c, h100.sm_clock_mhz) == (612.345, 700.0, 64, 1980)
    assert h100.throttle_reasons == pynvml.nvmlClocksEventReasonSwPowerCap
    assert v100.throttle_reasons == pynvml.nvmlClocksThrottleReasonHwSlowdown and v100.power_limit_w is None
    assert h100.processes is None and h100.ecc_corrected_errors is None  # slow readings only with detail
    assert h100.gpm == {} and probe.gpm_supported("GPU-0000") and not probe.gpm_supported("GPU-1111")
    [second] = probe.sample(["GPU-0000"], detail=True)
    assert set(second.gpm) == set(GPM_METRICS) - {"gpm_dram_bw_util_percent"}
    assert second.gpm["gpm_sm_util_percent"] == pynvml.NVML_GPM_METRIC_SM_UTIL + 0.02
    assert (second.ecc_corrected_errors, second.ecc_uncorrected_errors) == (5, 0)
    assert [(p.pid, p.used_memory_bytes) for p in second.processes] == [(4242, 1 << 30), (4343, None)]
    assert (second.pcie_tx_kb_s, second.pcie_rx_kb_s) == (1000, 2000)
    [third] = probe.sample(["GPU-0000"], detail=False)  # the two buffers alternate: 2 -> 3, not 1 -> 3
    assert third.gpm["gpm_sm_util_percent"] == pynvml.NVML_GPM_METRIC_SM_UTIL + 0.03
    [v100] = probe.sample(["GPU-1111"], detail=True)
    assert v100.ecc_corrected_errors is None and v100.processes is not None


def test_mig_instances_are_read_by_uuid_and_gpm_goes_through_the_parent():
    nvml = StandInNvml()
    nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle = lambda handle: 0  # an H100 parent that offers GPM
    calls = []

    def mig_sample(parent, gpu_instance_id, sample):
        calls.append((parent, gpu_instance_id))
        nvml.nvmlGpmSampleGet(parent, sample)

    nvml.nvmlGpmMigSampleGet = mig_sample
    probe = NvmlProbe.connected(nvml)
    [first] = probe.sample(["MIG-2222-a"], detail=False)
    assert first.uuid == "MIG-2222-a" and probe.gpm_supported("MIG-2222-a") and first.gpm == {}
    [second] = probe.sample(["MIG-2222-a"], detail=False)
    assert calls == [(0, 3), (0, 3)] and "gpm_tensor_util_percent" in second.gpm


def test_an_nvml_error_that_is_not_a_missing_feature_propagates_and_close_shuts_nvml_down_once():
    nvml = StandInNvml()
    probe = NvmlProbe.connected(nvml)
    probe.sample(["GPU-0000"], detail=False)
    nvml.nvmlDeviceGetUtilizationRates = lambda handle: nvml._fail(pynvml.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        probe.sample(["GPU-0000"], detail=False)
    probe.close()
    probe.close()
    assert nvml.shutdowns == 1 and nvml.freed == 2
