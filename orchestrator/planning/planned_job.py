"""Pure: the one planning path of `orchestrator plan` and `orchestrator train`, the plan and its dry run."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config.schema import JobConfig
from orchestrator.planning.placement import PlacementPrediction, predict_placement
from orchestrator.planning.plan import ClusterSnapshot, JobPlan, plan_job


@dataclass(frozen=True)
class PlannedJob:
    """A job planned on a cluster: what to reserve, and where it would land now."""

    plan: JobPlan
    prediction: PlacementPrediction
    """`plan` prints it and exits 1 when it does not fit now; `train` launches anyway (an autoscaler may add
    nodes, and scaling.placement_timeout_s decides)."""


def plan_on_cluster(job: JobConfig, cluster: ClusterSnapshot) -> PlannedJob:
    """Plan `job` on `cluster` and predict its placement; PlanError when the job can never run there."""
    plan = plan_job(job, cluster)
    return PlannedJob(plan, predict_placement(plan, cluster))
