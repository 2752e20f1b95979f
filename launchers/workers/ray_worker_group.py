"""The job's worker group on Ray: a placement group, one actor per rank, their report calls.

Restarts replace only what failed: surviving workers keep their processes (imports, data set and
model already built), the lost ones are replaced inside their bundles (Ray reschedules the bundles
of a lost node), and every rank starts a new attempt from the checkpoint.

An elastic job (scaling.min_workers) keeps one placement group of its full size: when a lost node's
bundles are not placed again within scaling.placement_timeout_s, the next attempt runs on the bundles
that are placed; Ray keeps trying to place the others, and once it has, the group says so (a
CapacityReturned event) and the job grows back at a checkpoint.

Hot spares (failure.spare_workers) are extra bundles of the same placement group, each holding started,
warmed-up workers (torch and the training loop imported) that run no rank: a restart fills the ranks'
bundles with live workers first, so a dead worker's rank moves into a spare at once, and the bundle it
leaves gets a new spare that starts in the background.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Hashable, Optional, Sequence, TypeVar

from launchers.cluster.connection import cluster_snapshot, draining_nodes
from launchers.workers.rank_actor import start_worker
from launchers.workers.worker_shelf import GroupShape, GroupSource, IdleGroup
from orchestrator.config.code_shipping import worker_runtime_env
from orchestrator.config.schema import JobConfig
from orchestrator.errors import LaunchError
from orchestrator.lifecycle.worker_group import (
    CapacityReturned,
    GroupEvent,
    NodeDraining,
    RankExited,
    RankLost,
    RankReport,
)
from orchestrator.planning.placement import free_summary
from orchestrator.planning.plan import JobPlan, format_resources
from orchestrator.planning.rank_specs import AttemptSpec, PlacedBundle, WorkerSpec, rank_slots, worker_specs

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.util.placement_group import PlacementGroup

    from launchers.workers.rank_actor import ReportBatch, WorkerHandle

_Result = TypeVar("_Result")

LONG_POLL_S = 30.0
"""How long one reports() call waits for the first report before returning empty (and being re-issued)."""
ABORT_GRACE_S = 20.0
"""How long surviving ranks get to leave a failed attempt (their collectives fail once a peer is gone)."""
DRAIN_POLL_S = 2.0
"""How often the group asks Ray which nodes are being drained (one GCS call)."""
RESET_TIMEOUT_S = 30.0
"""How long a group's workers get to reset before the group is removed instead of shelved."""
NODE_ID_LABEL = "ray.io/node-id"
"""The label every Ray node carries with its id: a bundle label selector on it keeps bundles off nodes."""


class RayWorkerGroup:
    """Implements orchestrator.lifecycle.worker_group.WorkerGroup with Ray actors inside one placement group."""

    def __init__(
        self,
        plan: JobPlan,
        job: JobConfig,
        name: str,
        checkpoint_dir: Optional[str] = None,
        run_id: Optional[str] = None,
        shelf: Optional[GroupSource] = None,
        owner: Optional[Hashable] = None,
    ):
        self.plan = plan
        self.job = job
        self.name = name
        self.checkpoint_dir = checkpoint_dir
        self.run_id = run_id
        """The job's MLflow run (None without tracking): a script sees it in orchestrator.context()."""
        self.runtime_env = worker_runtime_env(job)
        """cluster.runtime_env, plus the user's own packages that the ranks import (py_modules)."""
        self._placement_group: Optional[PlacementGroup] = None
        self._by_bundle: dict[int, list[WorkerHandle]] = {}
        self._actors: list[WorkerHandle] = []  # in rank order
        self._pending: dict[ObjectRef[ReportBatch], int] = {}  # outstanding reports() call -> world rank
        self._specs: list[WorkerSpec] = []
        self._spawned = 0
        self._avoid: frozenset[str] = frozenset()
        """Nodes (ids) no rank of the next attempt may use: excluded or being drained."""
        self._draining: set[str] = set()
        """Nodes already reported as being drained."""
        self._next_drain_poll = 0.0
        self._next_capacity_check = 0.0
        self.shelf = shelf
        """A sweep's idle groups: this group starts from one of its shape there, and goes there when it ends cleanly."""
        self.owner = owner
        """Who this group runs for (a sweep's trial number): it takes the shelf's group reserved for it, if any."""
        self.reused = False
        """Whether this group took an idle group's placement group and workers instead of starting its own."""
        self._lease: Optional[str] = None
        self._own_bundles: Optional[frozenset[int]] = None
        """The bundles of a pool's placement group that this job leased (None: every bundle of its own group)."""

    @property
    def specs(self) -> Sequence[WorkerSpec]:
        return self._specs

    def spawn(self) -> "RayWorkerGroup":
        """Ask Ray for the placement group and one actor per rank, and return without waiting for either.

        The worker processes start (interpreter, Ray) while the caller prepares the rest, e.g. opens
        the run record and then sets `checkpoint_dir` to the run's folder. The caller owns the group from
        here: `shutdown()` on every path.
        """
        from ray.util.placement_group import placement_group

        if self._placement_group is None and self.shelf is not None and not self._avoid:
            # a job outside a sweep has no owner key: its name says who holds a pool's workers
            idle = self.shelf.take(
                GroupShape.of(self.plan, self.job), self.owner if self.owner is not None else self.name
            )
            if idle is not None:
                self._placement_group, self._by_bundle, self.reused = idle.placement_group, idle.by_bundle, True
                self._spawned = sum(len(actors) for actors in idle.by_bundle.values())
                self._lease, self._own_bundles = idle.lease, frozenset(idle.by_bundle)
        if self._placement_group is None:
            bundles = [*self.plan.bundles, *[self.plan.bundles[0]] * self._spare_bundles]
            selector = [{NODE_ID_LABEL: f"!in({','.join(sorted(self._avoid))})"}] if self._avoid else None
            self._placement_group = placement_group(
                bundles,
                strategy=self.plan.strategy,
                name=self.name,
                bundle_label_selector=selector * len(bundles) if selector else None,
            )
            for index in range(len(bundles)):
                self._by_bundle[index] = [self._start_actor(index) for _ in range(self.plan.workers_per_bundle)]
        return self

    @property
    def _spare_bundles(self) -> int:
        """Bundles of spare workers (whole bundles: under workers_per_node a spare is a whole node)."""
        return -(-self.job.failure.spare_workers // self.plan.workers_per_bundle)

    def start(self, resume_from: Optional[str] = None, attempt: int = 0, avoid: frozenset[str] = frozenset()) -> None:
        """Place the bundles, start one actor per rank (unless `spawn` did), and start every rank (attempt `attempt`).

        No bundle is placed on the nodes in `avoid`; an elastic job starts on the bundles placed within
        scaling.placement_timeout_s when they hold at least scaling.min_workers workers.
        """
        self._checkpoint_folder()  # before anything is reserved
        avoid = self._avoidable(avoid)
        if avoid != self._avoid and self._placement_group is not None:  # spawned early, before the job knew
            self.shutdown()
        self._avoid = avoid
        self.spawn()
        self._launch(resume_from, attempt, self._wait_placed())

    def restart(
        self, lost_ranks: set[int], resume_from: Optional[str], attempt: int, avoid: frozenset[str] = frozenset()
    ) -> dict[str, float]:
        """End the failed attempt everywhere, replace lost workers, start a new attempt from `resume_from`.

        Ranks on the nodes in `avoid` (being drained) stop with the others: an elastic job continues without
        their bundles, a fixed-size one gets a new placement group placed away from those nodes.
        """
        started = time.perf_counter()
        lost = self._end_attempt(set(lost_ranks))
        for world_rank in sorted(lost):
            self._discard(self._actors[world_rank])
        # a node once avoided stays so: a drained node is still alive (and placed) until its deadline
        self._avoid = self._avoidable(self._avoid | avoid | self._draining)
        avoided = any(bundle.node_id in self._avoid for bundle in self._placed_bundles(True))
        if avoided and not self.job.scaling.elastic:
            # Ray cannot move a placed bundle: the whole group is placed anew, away from those nodes (an elastic
            # job continues without their bundles instead: a drained node's are placed elsewhere once it is gone)
            self.shutdown()
            self.spawn()
        ended = time.perf_counter()
        placed = self._wait_placed()  # a lost node's bundles are being placed elsewhere
        self._launch(resume_from, attempt, placed)
        return {"teardown": ended - started, "placement_and_start": time.perf_counter() - ended}

    def _checkpoint_folder(self) -> str:
        """`checkpoint_dir`, which the caller sets before the group starts (the run's folder)."""
        if self.checkpoint_dir is None:
            raise ValueError("the worker group needs its checkpoint folder before it starts")
        return self.checkpoint_dir

    def _avoidable(self, avoid: frozenset[str]) -> frozenset[str]:
        """`avoid`, unless it holds every alive node that could take a bundle (a one-node cluster): a job kept off
        all of them could never be placed, while on them it may still run."""
        if not avoid:
            return avoid
        bundle = self.plan.bundles[0]
        able = {
            node.node_id
            for node in cluster_snapshot(fixed_size=False).nodes
            if all(node.total.get(name, 0.0) >= amount for name, amount in bundle.items())
        }
        return avoid if able - avoid else frozenset()

    def _wait_placed(self) -> list[PlacedBundle]:
        """The usable placed bundles once every bundle is placed or scaling.placement_timeout_s passed: enough
        for num_workers (spares are welcome, not needed), or for min_workers when the job is elastic."""
        scaling = self.job.scaling
        self._reserved().wait(timeout_seconds=scaling.placement_timeout_s)
        placed = self._placed_bundles()
        needed = scaling.min_workers if scaling.min_workers is not None else self.plan.world_size
        if len(placed) * self.plan.workers_per_bundle < needed:
            shown = f"; placed: {len(placed) * self.plan.workers_per_bundle} workers" if scaling.elastic else ""
            raise LaunchError(
                f"{self._placement_failure()}{shown}"
                + (f", fewer than scaling.min_workers={needed}" if scaling.elastic else "")
            )
        return placed

    def _ranks_bundles(self, placed: list[PlacedBundle]) -> list[PlacedBundle]:
        """The bundles the ranks run in: up to the job's size, those with live workers first (a spare takes over a
        dead worker's rank at once), then the lowest indices; the rest hold spares."""
        wanted = min(len(placed), len(self.plan.bundles))
        ready = sorted(
            placed,
            key=lambda b: (len(self._by_bundle.get(b.bundle_index, [])) < self.plan.workers_per_bundle, b.bundle_index),
        )
        return sorted(ready[:wanted], key=lambda b: b.bundle_index)

    def _launch(self, resume_from: Optional[str], attempt: int, placed: list[PlacedBundle]) -> None:
        """Fill every bundle with its workers, order them by rank, and start an attempt on each."""
        checkpoint_dir = self._checkpoint_folder()
        ranks = self._ranks_bundles(placed)
        plan = replace(self.plan, world_size=len(ranks) * self.plan.workers_per_bundle)
        slots = rank_slots(plan, ranks)
        for bundle in placed:  # the ranks' bundles, and new spares (which start in the background)
            missing = self.plan.workers_per_bundle - len(self._by_bundle.setdefault(bundle.bundle_index, []))
            self._by_bundle[bundle.bundle_index].extend(self._start_actor(bundle.bundle_index) for _ in range(missing))
        pools = {index: list(actors) for index, actors in self._by_bundle.items()}
        self._actors = [pools[slot.bundle_index].pop(0) for slot in slots]
        for spare in (actor for actors in pools.values() for actor in actors):
            # torch, the loop and the data set loaded before they are needed; for a script, its process started
            spare.warm.remote(self.job)
        gpu_ids = None
        if "GPU" in self.plan.worker_resources:
            gpu_ids = _gather([actor.gpu_ids.remote() for actor in self._actors], slots)
        [master_port] = _gather([self._actors[0].free_port.remote()], slots)
        pids = _gather([actor.pid.remote() for actor in self._actors], slots)
        self._specs = worker_specs(
            plan,
            ranks,
            master_port,
            gpu_ids,
            pids,
            AttemptSpec(self.name, attempt, self.job.failure.max_restarts),
        )
        # a pool's workers started without the job's runtime_env: its variables (PYTHONPATH to the user's code
        # included) are set per attempt, and reset with the worker
        env_vars = dict(self.runtime_env.get("env_vars") or {}) if self._lease is not None else None
        _gather(
            [
                actor.start.remote(spec, self.job, checkpoint_dir, resume_from, self.run_id, env_vars)
                for spec, actor in zip(self._specs, self._actors)
            ],
            slots,
        )
        self._pending = {
            actor.reports.remote(LONG_POLL_S): spec.world_rank for spec, actor in zip(self._specs, self._actors)
        }
        self._next_capacity_check = time.monotonic() + self.job.scaling.resize_check_s

    def _end_attempt(self, lost: set[int]) -> set[int]:
        """Stop the attempt on every survivor and drain its reports; a survivor that will not end is lost too."""
        import ray

        for world_rank, actor in enumerate(self._actors):
            if world_rank in lost:
                ray.kill(actor, no_restart=True)  # hung or dead: its thread cannot be recovered
            else:
                actor.stop.remote()
        deadline = time.monotonic() + ABORT_GRACE_S
        while self._pending and time.monotonic() < deadline:
            for event in self._rank_events(max(0.0, deadline - time.monotonic())):
                if isinstance(event, RankLost):
                    lost.add(event.world_rank)
        lost.update(self._pending.values())  # still inside the old attempt after the grace period
        self._pending = {}
        return lost

    def _discard(self, actor: WorkerHandle) -> None:
        import ray

        ray.kill(actor, no_restart=True)
        for actors in self._by_bundle.values():
            if actor in actors:
                actors.remove(actor)

    def _placed_bundles(self, avoided_too: bool = False) -> list[PlacedBundle]:
        """The bundles placed on alive nodes (a lost node's are not until Ray places them again), without those on
        nodes to avoid unless `avoided_too`."""
        from ray.util.placement_group import placement_group_table

        table = placement_group_table(self._placement_group)
        nodes = {node.node_id: node.ip for node in cluster_snapshot(fixed_size=False).nodes}
        return [
            PlacedBundle(bundle_index=index, node_id=node_id, node_ip=nodes[node_id])
            for index, node_id in sorted(table["bundles_to_node_id"].items())
            if node_id in nodes
            and (avoided_too or node_id not in self._avoid)
            and (self._own_bundles is None or index in self._own_bundles)
        ]

    def _start_actor(self, bundle_index: int) -> WorkerHandle:
        self._spawned += 1
        return start_worker(
            self.plan.worker_resources,
            self._reserved(),
            bundle_index,
            f"{self.name}-worker{self._spawned}",
            self.runtime_env,
        )

    def _reserved(self) -> PlacementGroup:
        """The placement group, which spawn() asked for (and shutdown() removes)."""
        if self._placement_group is None:
            raise RuntimeError("the worker group has no placement group: spawn() it first (and not after shutdown())")
        return self._placement_group

    def _placement_failure(self) -> str:
        bundles = [*self.plan.bundles, *[self.plan.bundles[0]] * self._spare_bundles]
        total = {name: amount * len(bundles) for name, amount in bundles[0].items()}
        free = free_summary(cluster_snapshot(fixed_size=False).nodes)
        return (
            f"the placement group was not placed within scaling.placement_timeout_s="
            f"{self.job.scaling.placement_timeout_s:g}: the job asked for {len(bundles)} bundles of "
            f"{format_resources(bundles[0])} (total {format_resources(total)}) with strategy "
            f"{self.plan.strategy}; free now per node: {free}"
        )

    def wait(self, timeout_s: float) -> list[GroupEvent]:
        """Reports, ends and deaths of ranks that arrived within `timeout_s`, then what changed on the cluster
        for the job: its nodes being drained, and (elastic, below full size) lost workers placeable again."""
        events = self._rank_events(timeout_s)
        if self._pending:
            events.extend(self._cluster_events())
        return events

    def _cluster_events(self) -> list[GroupEvent]:
        now = time.monotonic()
        events: list[GroupEvent] = []
        if now >= self._next_drain_poll:
            self._next_drain_poll = now + DRAIN_POLL_S
            ours = {spec.node_id: spec.node_ip for spec in self._specs}
            for node, deadline in draining_nodes().items():
                if node in ours and node not in self._draining:
                    self._draining.add(node)
                    # the deadline on the controller's clock (monotonic), from Ray's wall-clock one
                    when = None if deadline is None else now + (deadline - time.time())
                    events.append(NodeDraining(node_id=node, node_ip=ours[node], deadline=when))
        running = len(self._specs)
        if self.job.scaling.elastic and running < self.plan.world_size and now >= self._next_capacity_check:
            self._next_capacity_check = now + self.job.scaling.resize_check_s
            placeable = min(len(self._placed_bundles()), len(self.plan.bundles)) * self.plan.workers_per_bundle
            if placeable > running:
                events.append(CapacityReturned(workers=placeable))
        return events

    def _rank_events(self, timeout_s: float) -> list[GroupEvent]:
        import ray

        if not self._pending:
            return []
        calls = list(self._pending)
        ready, _ = ray.wait(calls, num_returns=1, timeout=timeout_s)
        if ready:  # take everything else that is ready as well
            ready, _ = ray.wait(calls, num_returns=len(calls), timeout=0)
        events: list[GroupEvent] = []
        for call in ready:
            events.extend(self._collect(call))
        return events

    def _collect(self, call: ObjectRef[ReportBatch]) -> list[GroupEvent]:
        import ray
        from ray.exceptions import RayActorError

        world_rank = self._pending.pop(call)
        try:
            batch = ray.get(call)
        except RayActorError as error:
            return [RankLost(world_rank=world_rank, node_ip=self._specs[world_rank].node_ip, reason=_first_line(error))]
        events: list[GroupEvent] = [RankReport(world_rank=world_rank, report=report) for report in batch.reports]
        if batch.done:
            events.append(RankExited(world_rank=world_rank))
        else:
            self._pending[self._actors[world_rank].reports.remote(LONG_POLL_S)] = world_rank
        return events

    def request_stop(self) -> None:
        """Ask every live rank to stop at the next step the ranks agree on."""
        for actor in self._actors:
            actor.stop.remote()

    def shutdown(self) -> None:
        """Kill every actor and remove the placement group (idempotent); with a shelf, a group whose ranks all ended
        goes there instead, its workers reset, for the sweep's next job of its shape."""
        import ray
        from ray.util.placement_group import remove_placement_group

        if self.shelf is not None and self._placement_group is not None:
            clean = self._reset_for_reuse()
            idle = IdleGroup(
                GroupShape.of(self.plan, self.job),
                self._placement_group,
                self._by_bundle,
                self.owner,
                lease=self._lease,
            )
            self._by_bundle, self._actors, self._pending, self._placement_group = {}, [], {}, None
            self._lease = self._own_bundles = None
            self.shelf.put(idle, clean)  # the shelf keeps it, or removes it (a pool replaces the workers)
            return
        for actors in self._by_bundle.values():
            for actor in actors:
                ray.kill(actor, no_restart=True)
        self._by_bundle, self._actors, self._pending = {}, [], {}
        if self._placement_group is not None:
            remove_placement_group(self._placement_group)
            self._placement_group = None

    def _reset_for_reuse(self) -> bool:
        """Whether the group can serve another job, its workers reset: every rank's attempt ended (no report call
        outstanding), no node avoided, a worker in every bundle, and each reset within RESET_TIMEOUT_S."""
        import ray

        if self._pending or self._avoid:
            return False
        actors = [actor for actors in self._by_bundle.values() for actor in actors]
        if len(actors) != self.plan.workers_per_bundle * len(self._by_bundle):
            return False
        try:
            ray.get([actor.reset.remote() for actor in actors], timeout=RESET_TIMEOUT_S)
        except Exception:  # a dead or stuck worker: the group is not reused
            return False
        return True


def _gather(calls: Sequence[ObjectRef[_Result]], slots: Sequence[PlacedBundle]) -> list[_Result]:
    """Results of one call per rank; a rank whose worker died becomes a LaunchError naming it."""
    import ray
    from ray.exceptions import RayActorError

    results = []
    for world_rank, call in enumerate(calls):
        try:
            results.append(ray.get(call))
        except RayActorError as error:
            raise LaunchError(
                f"rank {world_rank} on {slots[world_rank].node_ip} died while the group was "
                f"starting: {_first_line(error)}",
                retryable=True,
            ) from error
    return results


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
