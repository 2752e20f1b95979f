"""The job's worker groups on Ray: the first one spawned early, later ones made when a restart rebuilds."""

from __future__ import annotations

import contextlib
import uuid
from typing import Hashable, Iterator, Optional

from launchers.workers.ray_worker_group import RayWorkerGroup
from launchers.workers.worker_shelf import GroupSource
from orchestrator.config.schema import JobConfig
from orchestrator.planning.plan import JobPlan


class WorkerGroups:
    """The controller's group factory: the first call takes the group spawned early, later calls make new ones.

    The first group's processes start (interpreter, Ray) while the run record opens; the run's folder
    and id are only known then, so `run_in` hands them to it (and to every later group) before it starts.
    """

    def __init__(
        self,
        plan: JobPlan,
        job: JobConfig,
        name: Optional[str] = None,
        shelf: Optional[GroupSource] = None,
        owner: Optional[Hashable] = None,
    ):
        self.plan = plan
        self.job = job
        self.name = name or f"orchestrator-{uuid.uuid4().hex[:12]}"
        """The placement group's name, its workers' (`<name>-worker<N>`) and its monitors' on Ray."""
        self.shelf = shelf
        """A sweep's idle groups (sweep.reuse_workers) or a pool (cluster.pool): groups come from and go back there."""
        self.first = RayWorkerGroup(plan, job, self.name, shelf=shelf, owner=owner)
        self._first_taken = False

    def run_in(self, checkpoint_dir: str, run_id: Optional[str]) -> None:
        """The run's checkpoint folder and MLflow run id, which every group's ranks are started with."""
        self.first.checkpoint_dir, self.first.run_id = checkpoint_dir, run_id

    def __call__(self) -> RayWorkerGroup:
        """The next group for the controller, which owns it from here (it shuts down every group it takes)."""
        if not self._first_taken:
            self._first_taken = True
            return self.first
        return RayWorkerGroup(
            self.plan, self.job, self.name, self.first.checkpoint_dir, self.first.run_id, shelf=self.shelf
        )


@contextlib.contextmanager
def spawned(
    plan: JobPlan, job: JobConfig, shelf: Optional[GroupSource] = None, owner: Optional[Hashable] = None
) -> Iterator[WorkerGroups]:
    """Spawn the job's first group now (or take an idle one of its shape from `shelf`, the one `owner` reserved if
    it did), without waiting for it; shut it down on leaving if the controller did not."""
    groups = WorkerGroups(plan, job, shelf=shelf, owner=owner)
    try:
        groups.first.spawn()
        yield groups
    finally:
        groups.first.shutdown()  # idempotent: a group the controller took is already shut down
