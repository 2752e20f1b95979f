"""Pure: what the driver does with what monitors and ranks send: metrics and tags into the run's
sink, warnings and the end-of-job summary onto the console.

It runs on the controller's thread (through the JobObserver callbacks), so the sink and the console
keep a single writer. System metrics are logged at the latest global step any rank has reported
(0 before the first), so they line up with train/loss on MLflow's step axis.
"""

from __future__ import annotations

import collections
import itertools
import operator
from typing import TYPE_CHECKING, Optional, Sequence

from orchestrator.config.schema import MonitorConfig
from orchestrator.lifecycle.rank_reports import StepReport
from orchestrator.monitoring.detectors import (
    LowUtilDetector,
    LowUtilEpisode,
    StragglerDetector,
    StragglerEpisode,
)
from orchestrator.monitoring.metric_names import (
    SampleMetrics,
    gpu_key,
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
_LAYOUT = operator.attrgetter("world_rank", "node_rank", "cuda_device", "node_ip", "node_id")
"""Where a rank runs, as far as monitoring is concerned."""


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
        self.notes_seen: set[str] = set()
        self.episodes: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self.sample_metrics = SampleMetrics()
        self.layout: list[tuple] = []
        """(world_rank, node_rank, cuda_device, node_ip, node_id) of each rank of the latest group."""
        self._rank_nodes: Optional[dict[int, str]] = None
        self._runs: dict[int, list[tuple]] = {}
        """node rank -> the layout rows of its ranks in the latest group."""

    def on_group(self, specs: Sequence[WorkerSpec]) -> None:
        """Remember where each rank runs; tag each node with its IP, its Ray node id and its ranks."""
        layout = list(map(_LAYOUT, specs))
        if layout == self.layout:  # restarted in place: every rank where it was, so the tags are too
            return
        self.layout, self._rank_nodes = layout, None
        # a Python loop over nodes, with what is done per rank in C (groupby, map): 32,768 ranks restart at once
        runs: dict[int, list[tuple]] = {}
        for node_rank, run in itertools.groupby(layout, key=operator.itemgetter(1)):
            runs.setdefault(node_rank, []).extend(run)
        tags: dict[str, str] = {}
        for node_rank, rows in runs.items():
            if self._runs.get(node_rank) == rows:  # the node as the previous group had it: tagged already
                continue
            node, (_, _, _, node_ip, node_id) = node_name(node_rank), rows[-1]
            tags[f"monitor.{node}.node_ip"], tags[f"monitor.{node}.ray_node_id"] = node_ip, node_id
            tags[f"monitor.{node}.ranks"] = ",".join(map(str, sorted(map(operator.itemgetter(0), rows))))
        self._runs = runs
        if tags:
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
        if report.step > self.step:
            self.step = report.step
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
        self.sink.log_metrics(self.sample_metrics(item), self.step, timestamp_s=item.wall_time_s)
        # get, then make: setdefault(key, Tally()) would make a tally per reading to throw it away
        host = self.hosts.get(item.node)
        if host is None:
            host = self.hosts[item.node] = HostTally()
        host.add(item.host)
        for index, reading in item.gpus.items():
            gpu = (item.node, index)
            tally = self.gpus.get(gpu)
            if tally is None:
                tally = self.gpus[gpu] = GpuTally()
            tally.add(reading)
            if self.training and reading.utilization_percent is not None:
                episode = self.low_util.observe(gpu, reading.utilization_percent)
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

    def node_of(self, world_rank: int) -> str:
        """The node a rank of the latest group runs on ("?" for a rank it does not have)."""
        if self._rank_nodes is None:  # made when a straggler is first named, not at every restart
            self._rank_nodes = {row[0]: node_name(row[1]) for row in self.layout}
        return self._rank_nodes.get(world_rank, "?")

    def gpu_ranks(self, node: str, index: int) -> list[int]:
        """The ranks of the latest group that use GPU `index` (cuda:<index>) of `node`."""
        return [
            rank for rank, node_rank, device, _, _ in self.layout if device == index and node_name(node_rank) == node
        ]

    def _note(self, text: str) -> None:
        if text not in self.notes_seen:
            self.notes_seen.add(text)
            self.console.message(f"monitor: {text}")

    def _straggler(self, episode: StragglerEpisode, measured: str) -> None:
        rank, node = episode.world_rank, self.node_of(episode.world_rank)
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
        ranks = ",".join(str(rank) for rank in self.gpu_ranks(node, index)) or "?"
        text = (
            f"{key} (rank {ranks}) averaged {episode.mean_percent:.1f}% utilization over its last "
            f"{episode.samples} samples ({episode.samples * self.config.interval_s:g} s) at step {self.step}, "
            f"under monitor.low_util_percent={self.config.low_util_percent:g}"
        )
        self.sink.set_tags({f"monitor.low_util.{node}.gpu{index}": text})
        self.console.warning(f"low GPU utilization: {text}")
