"""The job's worker group on Ray: a placement group, one actor per rank, their report streams."""

from __future__ import annotations

from typing import Sequence

from orchestrator.config.schema import JobConfig
from orchestrator.errors import LaunchError
from orchestrator.group import GroupEvent, RankExited, RankLost, RankReport
from orchestrator.placement import free_summary
from orchestrator.plan import JobPlan, format_resources
from orchestrator.rendezvous import PlacedBundle, WorkerSpec, rank_slots, worker_specs

from launchers.ray_cluster import cluster_snapshot
from launchers.worker_actor import WorkerActor

# run(), stop() and the probes must be able to run at the same time on one actor
ACTOR_CONCURRENCY = 4


class RayWorkerGroup:
    """Implements orchestrator.group.WorkerGroup with Ray actors inside one placement group."""

    def __init__(self, plan: JobPlan, job: JobConfig, name: str, checkpoint_dir: str):
        self.plan = plan
        self.job = job
        self.name = name
        self.checkpoint_dir = checkpoint_dir
        self._placement_group = None
        self._actors: list = []
        self._streams: dict = {}
        self._specs: list[WorkerSpec] = []

    @property
    def specs(self) -> Sequence[WorkerSpec]:
        return self._specs

    def start(self) -> None:
        """Place the bundles, start one actor per rank in rank order, and start every rank."""
        import ray
        from ray.util.placement_group import placement_group

        self._placement_group = placement_group(list(self.plan.bundles), strategy=self.plan.strategy,
                                                name=self.name)
        if not self._placement_group.wait(timeout_seconds=self.job.scaling.placement_timeout_s):
            raise LaunchError(self._placement_failure())
        placed = self._placed_bundles()
        self._actors = [self._start_actor(slot, rank) for rank, slot in enumerate(rank_slots(self.plan, placed))]
        gpu_ids = ray.get([actor.gpu_ids.remote() for actor in self._actors]) if "GPU" in self.plan.worker_resources else None
        master_port = ray.get(self._actors[0].free_port.remote())
        self._specs = worker_specs(self.plan, placed, master_port, gpu_ids)
        self._streams = {
            actor.run.remote(spec, self.job, self.checkpoint_dir): spec.world_rank
            for spec, actor in zip(self._specs, self._actors)
        }

    def _placed_bundles(self) -> list[PlacedBundle]:
        from ray.util.placement_group import placement_group_table

        table = placement_group_table(self._placement_group)
        nodes = {node.node_id: node.ip for node in cluster_snapshot(fixed_size=False).nodes}
        return [
            PlacedBundle(bundle_index=index, node_id=node_id, node_ip=nodes[node_id])
            for index, node_id in sorted(table["bundles_to_node_id"].items())
        ]

    def _start_actor(self, bundle: PlacedBundle, world_rank: int):
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        resources = dict(self.plan.worker_resources)
        strategy = PlacementGroupSchedulingStrategy(placement_group=self._placement_group,
                                                    placement_group_bundle_index=bundle.bundle_index)
        return ray.remote(WorkerActor).options(
            num_cpus=resources.pop("CPU", 0.0),
            num_gpus=resources.pop("GPU", 0.0),
            memory=resources.pop("memory", None),
            resources=resources,
            scheduling_strategy=strategy,
            max_concurrency=ACTOR_CONCURRENCY,
            max_restarts=0,
            name=f"{self.name}-rank{world_rank}",
        ).remote()

    def _placement_failure(self) -> str:
        bundles = self.plan.bundles
        total = {name: amount * len(bundles) for name, amount in bundles[0].items()}
        free = free_summary(cluster_snapshot(fixed_size=False).nodes)
        return (f"the placement group was not placed within scaling.placement_timeout_s="
                f"{self.job.scaling.placement_timeout_s:g}: the job asked for {len(bundles)} bundles of "
                f"{format_resources(bundles[0])} (total {format_resources(total)}) with strategy "
                f"{self.plan.strategy}; free now per node: {free}")

    def wait(self, timeout_s: float) -> list[GroupEvent]:
        """Reports, ends and deaths of ranks that arrived within `timeout_s`."""
        import ray

        if not self._streams:
            return []
        streams = list(self._streams)
        ready, _ = ray.wait(streams, num_returns=1, timeout=timeout_s)
        if ready:  # take everything else that is ready as well
            ready, _ = ray.wait(streams, num_returns=len(streams), timeout=0)
        events: list[GroupEvent] = []
        for stream in ready:
            events.extend(self._next_events(stream))
        return events

    def _next_events(self, stream) -> list[GroupEvent]:
        import ray
        from ray.exceptions import RayActorError

        world_rank = self._streams[stream]
        try:
            batch = ray.get(next(stream))
        except StopIteration:
            del self._streams[stream]
            return [RankExited(world_rank=world_rank)]
        except RayActorError as error:
            del self._streams[stream]
            spec = self._specs[world_rank]
            return [RankLost(world_rank=world_rank, node_ip=spec.node_ip, reason=_first_line(error))]
        return [RankReport(world_rank=world_rank, report=report) for report in batch]

    def request_stop(self) -> None:
        """Ask every live rank to stop at the next step the ranks agree on."""
        for actor in self._actors:
            actor.stop.remote()

    def shutdown(self) -> None:
        """Kill every actor and remove the placement group (idempotent)."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors, self._streams = [], {}
        if self._placement_group is not None:
            remove_placement_group(self._placement_group)
            self._placement_group = None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
