"""The NVML GpuProbe on nvidia-ml-py (`pynvml`, imported lazily).

Cost: utilization, memory, power, temperature, clocks and throttle reasons are microsecond calls;
listing processes and the PCIe counters take milliseconds (the PCIe counter measures over 20 ms) and
hold a driver lock, so they (and the ECC counters) are read only when the caller asks for detail.

Truth: NVML "utilization" is the share of time any kernel ran, so a rank spinning in an NCCL wait
reads 100 %. On Hopper and newer GPUs the driver's GPM metrics say how busy the SMs and tensor
cores really were over each sampling period; they are read beside utilization where offered.
"""

from __future__ import annotations

import atexit
import logging
import time
from typing import Any, Callable, Optional, Sequence, SupportsFloat, TypeVar

from orchestrator.monitoring.gpu_devices import GpuDevice, MigDevice
from orchestrator.monitoring.gpu_probe import GpuProbe, GpuProcess, GpuSample, NullProbe

logger = logging.getLogger(__name__)

GPM_METRICS = {
    "gpm_sm_util_percent": "NVML_GPM_METRIC_SM_UTIL",
    "gpm_sm_occupancy_percent": "NVML_GPM_METRIC_SM_OCCUPANCY",
    "gpm_tensor_util_percent": "NVML_GPM_METRIC_ANY_TENSOR_UTIL",
    "gpm_dram_bw_util_percent": "NVML_GPM_METRIC_DRAM_BW_UTIL",
}
"""Our metric name -> the pynvml constant of the GPM metric (percent of the period or of the peak)."""
# a reading the device or driver does not offer comes back as one of these: the field is left empty
_ABSENT = (
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_NO_PERMISSION",
    "NVML_ERROR_NOT_FOUND",
    "NVML_ERROR_FUNCTION_NOT_FOUND",
    "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
)
MILLI = 1000.0

Handle = Any
"""An NVML device handle (pynvml's c_nvmlDevice_t; a test's fake NVML hands out its own): opaque here."""
GpmSample = Any
"""An NVML GPM sample buffer (pynvml's c_nvmlGpmSample_t), opaque here."""
_Reading = TypeVar("_Reading")


def open_nvml_probe() -> GpuProbe:
    """An NvmlProbe when the driver answers; else a NullProbe whose note says why (logged once)."""
    try:
        import pynvml
    except ImportError as error:
        return _off(f"nvidia-ml-py is not installed ({error})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        return _off(f"NVML is not available on this node ({error})")
    probe = NvmlProbe.connected(pynvml)
    atexit.register(probe.close)  # the actor may be killed before close(); exit still shuts NVML down
    return probe


def _off(reason: str) -> NullProbe:
    note = f"GPU monitoring off: {reason}"
    logger.warning(note)
    return NullProbe(note)


class NvmlProbe:
    """Reads GPUs through an initialised NVML: by UUID, never by index."""

    def __init__(self, nvml: Any, note: str = "NVML"):
        self.nvml = nvml
        self.note = note
        self._handles: dict[str, Handle] = {}
        self._gpm: dict[str, _GpmReader] = {}
        self._absent = tuple(getattr(nvml, name) for name in _ABSENT if hasattr(nvml, name))
        self._closed = False

    @classmethod
    def connected(cls, nvml: Any) -> "NvmlProbe":
        """A probe over an initialised NVML (the pynvml module); its note names the driver."""
        return cls(nvml, note=f"NVML driver {_text(nvml.nvmlSystemGetDriverVersion())}")

    def devices(self) -> Sequence[GpuDevice]:
        """Every GPU the driver lists, with MIG instances where MIG is on."""
        nvml = self.nvml
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            found.append(
                GpuDevice(
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    pci_bus_id=_text(nvml.nvmlDeviceGetPciInfo(handle).busId),
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    compute_capability=tuple(self._optional(nvml.nvmlDeviceGetCudaComputeCapability, handle) or (0, 0)),
                    cores=self._optional(nvml.nvmlDeviceGetNumGpuCores, handle) or 0,
                    mig=self._mig_instances(handle),
                )
            )
        return found

    def _mig_instances(self, handle: Handle) -> tuple[MigDevice, ...]:
        nvml = self.nvml
        mode = self._optional(nvml.nvmlDeviceGetMigMode, handle)
        if not mode or mode[0] != nvml.NVML_DEVICE_MIG_ENABLE:
            return ()
        instances = []
        for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            mig = self._optional(nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, slot)
            if mig is not None:  # empty slots answer NOT_FOUND
                instances.append(
                    MigDevice(
                        uuid=_text(nvml.nvmlDeviceGetUUID(mig)),
                        gpu_instance_id=nvml.nvmlDeviceGetGpuInstanceId(mig),
                        compute_instance_id=nvml.nvmlDeviceGetComputeInstanceId(mig),
                    )
                )
        return tuple(instances)

    def gpm_supported(self, uuid: str) -> bool:
        """Whether the driver offers GPM metrics for this GPU (or MIG instance)."""
        return self._gpm_reader(uuid).supported

    def sample(self, uuids: Sequence[str], detail: bool) -> list[GpuSample]:
        """Read each GPU; unsupported readings stay None, other NVML errors propagate."""
        return [self._read(uuid, detail) for uuid in uuids]

    def _read(self, uuid: str, detail: bool) -> GpuSample:
        nvml, handle = self.nvml, self._handle(uuid)
        utilization = self._optional(nvml.nvmlDeviceGetUtilizationRates, handle)
        memory = self._optional(nvml.nvmlDeviceGetMemoryInfo, handle)
        time_s = time.monotonic()
        power_mw = self._optional(nvml.nvmlDeviceGetPowerUsage, handle)
        limit_mw = self._optional(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
        sample = GpuSample(
            uuid=uuid,
            time_s=time_s,
            utilization_percent=None if utilization is None else float(utilization.gpu),
            memory_utilization_percent=None if utilization is None else float(utilization.memory),
            memory_used_bytes=None if memory is None else int(memory.used),
            memory_total_bytes=None if memory is None else int(memory.total),
            power_w=None if power_mw is None else power_mw / MILLI,
            power_limit_w=None if limit_mw is None else limit_mw / MILLI,
            temperature_c=_float(self._optional(nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU)),
            sm_clock_mhz=_float(self._optional(nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM)),
            throttle_reasons=self._throttle_reasons(handle),
            gpm=self._gpm_reader(uuid).read(),
        )
        return self._with_detail(sample, handle) if detail else sample

    def _with_detail(self, sample: GpuSample, handle: Handle) -> GpuSample:
        import dataclasses

        nvml = self.nvml
        corrected = self._optional(
            nvml.nvmlDeviceGetTotalEccErrors, handle, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_VOLATILE_ECC
        )
        uncorrected = self._optional(
            nvml.nvmlDeviceGetTotalEccErrors, handle, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC
        )
        processes = self._processes(handle)
        return dataclasses.replace(
            sample,
            ecc_corrected_errors=corrected,
            ecc_uncorrected_errors=uncorrected,
            processes=None
            if processes is None
            else tuple(GpuProcess(pid=int(p.pid), used_memory_bytes=p.usedGpuMemory) for p in processes),
            pcie_tx_kb_s=_float(self._optional(nvml.nvmlDeviceGetPcieThroughput, handle, nvml.NVML_PCIE_UTIL_TX_BYTES)),
            pcie_rx_kb_s=_float(self._optional(nvml.nvmlDeviceGetPcieThroughput, handle, nvml.NVML_PCIE_UTIL_RX_BYTES)),
        )

    def _throttle_reasons(self, handle: Handle) -> Optional[int]:
        # "clocks event reasons" is the current name; drivers before R535 only have "throttle reasons"
        for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
            function = getattr(self.nvml, name, None)
            value = None if function is None else self._optional(function, handle)
            if value is not None:
                return int(value)
        return None

    def _processes(self, handle: Handle) -> Optional[Sequence[Any]]:
        """The compute processes on the GPU (pynvml's c_nvmlProcessInfo_t entries); None where not offered."""
        # the unversioned call raises a library-mismatch error (not NVMLError) on drivers without _v3
        for name in ("nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"):
            function = getattr(self.nvml, name, None)
            listed = None if function is None else self._optional(function, handle)
            if listed is not None:
                return listed
        return None

    def _handle(self, uuid: str) -> Handle:
        if uuid not in self._handles:
            self._handles[uuid] = self.nvml.nvmlDeviceGetHandleByUUID(uuid)
        return self._handles[uuid]

    def _gpm_reader(self, uuid: str) -> "_GpmReader":
        if uuid not in self._gpm:
            self._gpm[uuid] = _GpmReader.open(self, self._handle(uuid))
        return self._gpm[uuid]

    def _optional(self, function: Callable[..., _Reading], *args: Any) -> Optional[_Reading]:
        """function(*args), or None where the device or driver does not offer that reading."""
        try:
            return function(*args)
        except self.nvml.NVMLError as error:
            if error.value in self._absent:
                return None
            raise

    def close(self) -> None:
        """Free the GPM samples and shut NVML down (once)."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for reader in self._gpm.values():
            reader.free()
        self.nvml.nvmlShutdown()


class _GpmReader:
    """GPM metrics of one device between consecutive samples: two sample buffers, used in turn."""

    def __init__(
        self,
        probe: NvmlProbe,
        handle: Handle,
        mig_parent: Optional[Handle],
        gpu_instance_id: Optional[int],
        buffers: list[GpmSample],
    ):
        self.probe, self.handle, self.mig_parent, self.gpu_instance_id = probe, handle, mig_parent, gpu_instance_id
        self.buffers = buffers
        self.taken = 0
        self.supported = bool(buffers)

    @classmethod
    def open(cls, probe: NvmlProbe, handle: Handle) -> "_GpmReader":
        """A reader with its two sample buffers, or an empty one where the driver offers no GPM."""
        nvml = probe.nvml
        parent, gpu_instance_id = None, None
        is_mig = probe._optional(nvml.nvmlDeviceIsMigDeviceHandle, handle)  # a ctypes c_uint
        if is_mig is not None and getattr(is_mig, "value", is_mig):
            # a MIG instance is sampled through its parent GPU and its GPU instance id
            parent = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
            gpu_instance_id = nvml.nvmlDeviceGetGpuInstanceId(handle)
        support = probe._optional(nvml.nvmlGpmQueryDeviceSupport, parent if parent is not None else handle)
        if support is None or not support.isSupportedDevice:
            return cls(probe, handle, parent, gpu_instance_id, [])
        return cls(probe, handle, parent, gpu_instance_id, [nvml.nvmlGpmSampleAlloc(), nvml.nvmlGpmSampleAlloc()])

    def read(self) -> dict[str, float]:
        """Take a GPM sample; the metrics over the time since the previous one ({} on the first call)."""
        if not self.supported:
            return {}
        nvml = self.probe.nvml
        current, previous = self.buffers[self.taken % 2], self.buffers[(self.taken + 1) % 2]
        if self.mig_parent is not None:
            nvml.nvmlGpmMigSampleGet(self.mig_parent, self.gpu_instance_id, current)
        else:
            nvml.nvmlGpmSampleGet(self.handle, current)
        self.taken += 1
        return self._metrics(previous, current) if self.taken > 1 else {}

    def _metrics(self, earlier: GpmSample, later: GpmSample) -> dict[str, float]:
        nvml = self.probe.nvml
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(GPM_METRICS)
        request.sample1, request.sample2 = earlier, later
        names = list(GPM_METRICS)
        for slot, name in enumerate(names):
            request.metrics[slot].metricId = getattr(nvml, GPM_METRICS[name])
        nvml.nvmlGpmMetricsGet(request)
        return {
            name: float(request.metrics[slot].value)
            for slot, name in enumerate(names)
            if request.metrics[slot].nvmlReturn == nvml.NVML_SUCCESS
        }

    def free(self) -> None:
        """Release the sample buffers."""
        for buffer in self.buffers:
            self.probe.nvml.nvmlGpmSampleFree(buffer)
        self.buffers, self.supported = [], False


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _float(value: Optional[SupportsFloat]) -> Optional[float]:
    return None if value is None else float(value)
