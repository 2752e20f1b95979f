"""Pure: MLflow metric names and values for system samples and summaries, and the summary table.

Names: `system/<node>/gpu<i>/<metric>` and `system/<node>/<metric>`, where <node> is `node<node_rank>`
(short and stable for the job: node ranks follow rank order) and gpu<i> is `cuda:<i>` as the ranks on
that node see it (the job's GPUs there in local-rank order). Units are in the names.
"""

from __future__ import annotations

import operator
from typing import Callable, Mapping, Optional

from orchestrator.monitoring.gpu_probe import GpuSample
from orchestrator.monitoring.samples import HostSample, NodeSample
from orchestrator.monitoring.summaries import MIB, GpuSummary, HostSummary

GPU_FIELDS = {
    "utilization_percent": ("utilization_percent", 1.0),
    "memory_utilization_percent": ("memory_utilization_percent", 1.0),
    "memory_used_mib": ("memory_used_bytes", 1.0 / MIB),
    "memory_total_mib": ("memory_total_bytes", 1.0 / MIB),
    "power_w": ("power_w", 1.0),
    "power_limit_w": ("power_limit_w", 1.0),
    "temperature_c": ("temperature_c", 1.0),
    "sm_clock_mhz": ("sm_clock_mhz", 1.0),
    "throttle_reasons": ("throttle_reasons", 1.0),
    "ecc_corrected_errors": ("ecc_corrected_errors", 1.0),
    "ecc_uncorrected_errors": ("ecc_uncorrected_errors", 1.0),
    "pcie_tx_kb_s": ("pcie_tx_kb_s", 1.0),
    "pcie_rx_kb_s": ("pcie_rx_kb_s", 1.0),
}
"""GPU metric name -> (GpuSample field, scale); fields a GPU does not offer are not logged."""


def gpu_key(node: str, index: int) -> str:
    """`<node>/gpu<i>`: how a GPU is named in metrics, tags and warnings."""
    return f"{node}/gpu{index}"


def gpu_metrics(node: str, index: int, sample: GpuSample) -> dict[str, float]:
    """One GPU reading as metrics."""
    prefix = f"system/{gpu_key(node, index)}/"
    metrics = {
        prefix + name: getattr(sample, field) * scale
        for name, (field, scale) in GPU_FIELDS.items()
        if getattr(sample, field) is not None
    }
    _add_processes(prefix, sample, metrics)
    metrics.update({prefix + name: value for name, value in sample.gpm.items()})
    return metrics


def _add_processes(prefix: str, sample: GpuSample, metrics: dict[str, float]) -> None:
    if sample.processes is not None:
        metrics[prefix + "processes"] = float(len(sample.processes))
        used = [process.used_memory_bytes for process in sample.processes if process.used_memory_bytes is not None]
        metrics[prefix + "processes_memory_mib"] = sum(used) / MIB


def host_metrics(node: str, host: HostSample) -> dict[str, float]:
    """One host reading as metrics: CPU, RAM, and each rank's RSS and CPU."""
    prefix = f"system/{node}/"
    metrics = {
        prefix + "cpu_percent": host.cpu_percent,
        prefix + "ram_used_mib": host.ram_used_bytes / MIB,
        prefix + "ram_total_mib": host.ram_total_bytes / MIB,
    }
    for world_rank, rss in host.rank_rss_bytes.items():
        metrics[f"{prefix}rank{world_rank}_rss_mib"] = rss / MIB
    for world_rank, cpu in host.rank_cpu_percent.items():
        metrics[f"{prefix}rank{world_rank}_cpu_percent"] = cpu
    if host.monitor_cpu_s is not None:
        metrics[prefix + "monitor_cpu_s"] = host.monitor_cpu_s
    return metrics


def sample_metrics(sample: NodeSample) -> dict[str, float]:
    """A node sample as metrics."""
    metrics = host_metrics(sample.node, sample.host)
    for index, reading in sample.gpus.items():
        metrics.update(gpu_metrics(sample.node, index, reading))
    return metrics


_GPU_VALUES = operator.attrgetter(*(field for field, _ in GPU_FIELDS.values()))
_NO_VALUES = (None,) * len(GPU_FIELDS)
_GpuNames = tuple[str, tuple[str, ...], Callable[[tuple], tuple], tuple[float, ...]]
"""A GPU's metric prefix, and for the readings it offers: their names, how to pick them, their scales."""


def _gpu_names(node: str, index: int, missing: tuple[bool, ...]) -> _GpuNames:
    prefix = f"system/{gpu_key(node, index)}/"
    offered = [position for position, absent in enumerate(missing) if not absent]
    fields = list(GPU_FIELDS.items())
    keys = tuple(prefix + fields[position][0] for position in offered)
    scales = tuple(fields[position][1][1] for position in offered)
    if len(offered) > 1:
        pick: Callable[[tuple], tuple] = operator.itemgetter(*offered)  # in C, a tuple
    else:  # itemgetter of one position gives the value itself, of none is an error
        pick = lambda values: tuple(values[position] for position in offered)  # noqa: E731
    return prefix, keys, pick, scales


class SampleMetrics:
    """`sample_metrics` that makes each node's and GPU's metric names once: the driver of a large job turns
    hundreds of node samples a second into metrics, and formatting some 140 names per sample was most of
    that work. Same metrics, same order."""

    def __init__(self) -> None:
        self._gpus: dict[tuple[str, int, tuple[bool, ...]], _GpuNames] = {}
        self._hosts: dict[str, tuple[str, str, str, str]] = {}
        self._ranks: dict[tuple[str, int], tuple[str, str]] = {}

    def __call__(self, sample: NodeSample) -> dict[str, float]:
        """A node sample as metrics (what sample_metrics returns)."""
        metrics = self._host(sample.node, sample.host)
        for index, reading in sample.gpus.items():
            self._gpu(sample.node, index, reading, metrics)
        return metrics

    def _host(self, node: str, host: HostSample) -> dict[str, float]:
        names = self._hosts.get(node)
        if names is None:
            prefix = f"system/{node}/"
            names = self._hosts[node] = (
                prefix + "cpu_percent",
                prefix + "ram_used_mib",
                prefix + "ram_total_mib",
                prefix + "monitor_cpu_s",
            )
        cpu, ram_used, ram_total, monitor_cpu = names
        metrics = {cpu: host.cpu_percent, ram_used: host.ram_used_bytes / MIB, ram_total: host.ram_total_bytes / MIB}
        for world_rank, rss in host.rank_rss_bytes.items():
            metrics[self._rank(node, world_rank)[0]] = rss / MIB
        for world_rank, rank_cpu in host.rank_cpu_percent.items():
            metrics[self._rank(node, world_rank)[1]] = rank_cpu
        if host.monitor_cpu_s is not None:
            metrics[monitor_cpu] = host.monitor_cpu_s
        return metrics

    def _rank(self, node: str, world_rank: int) -> tuple[str, str]:
        names = self._ranks.get((node, world_rank))
        if names is None:
            prefix = f"system/{node}/rank{world_rank}"
            names = self._ranks[(node, world_rank)] = (prefix + "_rss_mib", prefix + "_cpu_percent")
        return names

    def _gpu(self, node: str, index: int, sample: GpuSample, metrics: dict[str, float]) -> None:
        values = _GPU_VALUES(sample)
        missing = tuple(map(operator.is_, values, _NO_VALUES))  # which readings this GPU does not offer now
        names = self._gpus.get((node, index, missing))
        if names is None:
            names = self._gpus[(node, index, missing)] = _gpu_names(node, index, missing)
        prefix, keys, present, scales = names
        metrics.update(zip(keys, map(operator.mul, present(values), scales)))
        _add_processes(prefix, sample, metrics)
        for name, value in sample.gpm.items():
            metrics[prefix + name] = value


def summary_metrics(node: str, host: Optional[HostSummary], gpus: Mapping[int, GpuSummary]) -> dict[str, float]:
    """A node's end-of-job summary as metrics (`..._mean`, `..._peak`, `energy_wh`)."""
    metrics: dict[str, Optional[float]] = {}
    if host is not None:
        prefix = f"system/{node}/"
        metrics.update(
            {
                prefix + "cpu_percent_mean": host.cpu_mean_percent,
                prefix + "cpu_percent_peak": host.cpu_peak_percent,
                prefix + "ram_used_mib_peak": host.ram_used_peak_mib,
            }
        )
        metrics.update({f"{prefix}rank{rank}_rss_mib_peak": peak for rank, peak in host.rank_rss_peak_mib.items()})
    for index, gpu in gpus.items():
        prefix = f"system/{gpu_key(node, index)}/"
        metrics.update(
            {
                prefix + "utilization_percent_mean": gpu.utilization_mean_percent,
                prefix + "utilization_percent_peak": gpu.utilization_peak_percent,
                prefix + "memory_used_mib_peak": gpu.memory_used_peak_mib,
                prefix + "power_w_mean": gpu.power_mean_w,
                prefix + "energy_wh": gpu.energy_wh,
            }
        )
        metrics.update({f"{prefix}{name}_mean": mean for name, mean in gpu.gpm_mean_percent.items()})
    return {name: value for name, value in metrics.items() if value is not None}


def summary_table(hosts: Mapping[str, HostSummary], gpus: Mapping[tuple[str, int], GpuSummary]) -> list[str]:
    """The end-of-job table: one line per GPU, then one per node."""
    lines = []
    if gpus:
        lines.append(
            f"{'GPU':<12} {'samples':>7} {'util mean':>9} {'util peak':>9} {'SM active':>9} "
            f"{'mem peak MiB':>12} {'power W':>8} {'energy Wh':>9}"
        )
        for (node, index), gpu in sorted(gpus.items()):
            lines.append(
                f"{gpu_key(node, index):<12} {gpu.samples:>7} {_pct(gpu.utilization_mean_percent):>9} "
                f"{_pct(gpu.utilization_peak_percent):>9} "
                f"{_pct(gpu.gpm_mean_percent.get('gpm_sm_util_percent')):>9} "
                f"{_num(gpu.memory_used_peak_mib, 0):>12} {_num(gpu.power_mean_w, 1):>8} "
                f"{gpu.energy_wh:>9.3f}"
            )
    lines.append(
        f"{'node':<12} {'samples':>7} {'cpu mean':>9} {'cpu peak':>9} {'RAM peak MiB':>12} "
        f"{'monitor CPU s':>13}  rank: RSS peak MiB"
    )
    for node, host in sorted(hosts.items()):
        rss = ", ".join(f"{rank}: {peak:,.0f}" for rank, peak in host.rank_rss_peak_mib.items()) or "-"
        lines.append(
            f"{node:<12} {host.samples:>7} {_pct(host.cpu_mean_percent):>9} {_pct(host.cpu_peak_percent):>9} "
            f"{_num(host.ram_used_peak_mib, 0):>12} {_num(host.monitor_cpu_s, 2):>13}  {rss}"
        )
    return lines


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _num(value: Optional[float], digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
