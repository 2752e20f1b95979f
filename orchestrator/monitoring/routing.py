"""Pure: what the driver does with what monitors and ranks send: metrics and tags into the run's
sink, warnings and the end-of-job summary onto the console.

It runs on the controller's thread (through the JobObserver callbacks), so the sink and the console
keep a single writer. System metrics are logged at the latest global step any rank has reported
(0 before the first), so they line up with train/loss on MLflow's step axis.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Sequence

from orchestrator.config.schema import MonitorConfig
from orchestrator.lifecycle.rank_reports import StepReport
from orchestrator.monitoring.detectors import (
    LowUtilDetector,
    LowUtilEpisode,
    StragglerDetector,
    StragglerEpisode,
)
from orchestrator.monitoring.metric_names import (
    gpu_key,
    sample_metrics,
    summary_metrics,
    summary_table,
)
from orchestrator.monitoring.samples import (
    MonitorItem,
    MonitorNote,
    MonitorStatus,
    node_name,
)
from orchestrator.monitoring.summaries import GpuTally, HostTally
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.tracking.metrics_sink import MetricsSink

if TYPE_CHECKING:  # only a type here: the core does not import the command line's modules
    from orchestrator.cli.console import Console

SUMMARY_ARTIFACT = "system_summary.txt"


class SystemRecorder:
    """Turns node samples and step reports into metrics, tags, warnings and a summary."""

    def __init__(self, config: MonitorConfig, sink: MetricsSink, console: Console):
        self.config = config
        self.sink = sink
        self.console = console
        self.step = 0
        self.training = False
        self.stragglers = StragglerDetector(config.straggler_ratio, min_gap_s=config.straggler_min_gap_s)
        self.low_util: LowUtilDetector[tuple[str, int]] = LowUtilDetector(config.low_util_percent)
        self.hosts: dict[str, HostTally] = {}
        self.gpus: dict[tuple[str, int], GpuTally] = {}
        self.rank_nodes: dict[int, str] = {}
        self.gpu_ranks: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
        self.notes_seen: set[str] = set()
        self.episodes: collections.Counter[str] = collections.Counter()
        self.samples = 0

    def on_group(self, specs: Sequence[WorkerSpec]) -> None:
        """Remember where each rank runs and which GPU it holds; tag the nodes."""
        self.gpu_ranks.clear()
        tags: dict[str, str] = {}
        for spec in specs:
            node = node_name(spec.node_rank)
            self.rank_nodes[spec.world_rank] = node
            if spec.cuda_device is not None:
                self.gpu_ranks[(node, spec.cuda_device)].append(spec.world_rank)
            tags.update({f"monitor.{node}.node_ip": spec.node_ip, f"monitor.{node}.ray_node_id": spec.node_id})
        for node in set(self.rank_nodes.values()):
            tags[f"monitor.{node}.ranks"] = ",".join(str(r) for r, n in sorted(self.rank_nodes.items()) if n == node)
        self.sink.set_tags(tags)

    def on_status(self, status: MonitorStatus) -> None:
        """A node monitor started: tag its host and GPUs, say once what it can and cannot see."""
        tags = {f"monitor.{status.node}.hostname": status.hostname}
        tags.update({f"monitor.{status.node}.gpu{gpu.index}": f"{gpu.uuid} {gpu.name}".strip() for gpu in status.gpus})
        if status.notes:
            tags[f"monitor.{status.node}.notes"] = "; ".join(status.notes)
        self.sink.set_tags(tags)
        if status.gpus:
            listed = ", ".join(f"gpu{gpu.index}={gpu.uuid}" for gpu in status.gpus)
            self.console.message(f"monitor: {status.node} ({status.hostname}) samples {listed}")
        for note in status.notes:
            self._note(note)

    def on_step(self, report: StepReport) -> None:
        """A rank's heartbeat: advance the step axis and check for stragglers."""
        self.step = max(self.step, report.step)
        self.training = True
        if report.steps_timed < 1:
            return
        seconds = report.reach_sync_s if report.reach_sync_s is not None else report.step_time_s
        for episode in self.stragglers.observe(report.world_rank, seconds):
            self._straggler(episode, measured="to reach gradient sync" if report.reach_sync_s is not None else "")

    def on_item(self, item: MonitorItem) -> None:
        """A node monitor's sample (logged, summed up, checked for idle GPUs) or note (printed once)."""
        if isinstance(item, MonitorNote):
            self._note(f"{item.node}: {item.text}")
            return
        self.samples += 1
        self.sink.log_metrics(sample_metrics(item), self.step, timestamp_s=item.wall_time_s)
        self.hosts.setdefault(item.node, HostTally()).add(item.host)
        for index, reading in item.gpus.items():
            self.gpus.setdefault((item.node, index), GpuTally()).add(reading)
            if self.training and reading.utilization_percent is not None:
                episode = self.low_util.observe((item.node, index), reading.utilization_percent)
                if episode is not None:
                    self._low_util(episode)

    def finish(self) -> None:
        """Log and print the per-GPU and per-node summary and the episode counts."""
        if not self.hosts:
            return
        hosts = {node: tally.summary() for node, tally in self.hosts.items()}
        gpus = {key: tally.summary() for key, tally in self.gpus.items()}
        for node in sorted(hosts):  # one batch per node keeps each under MLflow's 1,000 metrics per request
            node_gpus = {index: summary for (name, index), summary in gpus.items() if name == node}
            self.sink.log_metrics(summary_metrics(node, hosts[node], node_gpus), self.step)
        self.sink.log_metrics(
            {
                "monitor/straggler_episodes": float(self.episodes["straggler"]),
                "monitor/low_util_episodes": float(self.episodes["low_util"]),
            },
            self.step,
        )
        table = summary_table(hosts, gpus)
        self.sink.log_text("\n".join(table) + "\n", SUMMARY_ARTIFACT)
        self.console.message("system summary:\n  " + "\n  ".join(table))

    def _note(self, text: str) -> None:
        if text not in self.notes_seen:
            self.notes_seen.add(text)
            self.console.message(f"monitor: {text}")

    def _straggler(self, episode: StragglerEpisode, measured: str) -> None:
        rank, node = episode.world_rank, self.rank_nodes.get(episode.world_rank, "?")
        self.sink.log_metrics(
            {
                f"monitor/rank{rank}/straggler": float(episode.started),
                f"monitor/rank{rank}/step_time_ratio": episode.ratio,
            },
            self.step,
        )
        if not episode.started:
            self.console.message(
                f"monitor: rank {rank} on {node} is back within monitor.straggler_ratio="
                f"{self.config.straggler_ratio:g} of the median ({episode.ratio:.2f}x)"
            )
            return
        self.episodes["straggler"] += 1
        text = (
            f"rank {rank} on {node} takes {episode.rank_median_s:.4f} s per step{' ' + measured if measured else ''} "
            f"(median of its last {self.stragglers.window} reports), {episode.ratio:.2f}x the median over ranks "
            f"({episode.median_s:.4f} s) at step {self.step}; monitor.straggler_ratio={self.config.straggler_ratio:g}"
        )
        self.sink.set_tags({f"monitor.straggler.rank{rank}": text})
        self.console.warning(f"straggler: {text}")

    def _low_util(self, episode: LowUtilEpisode[tuple[str, int]]) -> None:
        node, index = episode.gpu
        key = gpu_key(node, index)
        self.sink.log_metrics({f"monitor/{key}/low_util": float(episode.started)}, self.step)
        if not episode.started:
            self.console.message(f"monitor: {key} is back at {episode.mean_percent:.1f}% mean utilization")
            return
        self.episodes["low_util"] += 1
        ranks = ",".join(str(rank) for rank in self.gpu_ranks.get((node, index), [])) or "?"
        text = (
            f"{key} (rank {ranks}) averaged {episode.mean_percent:.1f}% utilization over its last "
            f"{episode.samples} samples ({episode.samples * self.config.interval_s:g} s) at step {self.step}, "
            f"under monitor.low_util_percent={self.config.low_util_percent:g}"
        )
        self.sink.set_tags({f"monitor.low_util.{node}.gpu{index}": text})
        self.console.warning(f"low GPU utilization: {text}")
