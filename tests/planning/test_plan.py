"""Pure planning: resources per bundle, backend resolution, and what a cluster cannot run."""

from __future__ import annotations

import pytest

from orchestrator.errors import PlanError
from orchestrator.planning.plan import ClusterSnapshot, NodeSnapshot, plan_job, resolve_backend
from tests.helpers import job_config


def _cluster(*nodes: dict, fixed_size: bool = False) -> ClusterSnapshot:
    return ClusterSnapshot(
        nodes=tuple(
            NodeSnapshot(node_id=f"n{i}", ip=f"10.0.0.{i}", total=resources, available=resources)
            for i, resources in enumerate(nodes)
        ),
        fixed_size=fixed_size,
    )


def test_default_plan_is_two_cpu_bundles_over_gloo():
    plan = plan_job(job_config([]), _cluster({"CPU": 2.0}, fixed_size=True))
    assert plan.world_size == 2 and plan.backend == "gloo" and plan.strategy == "PACK"
    assert plan.bundles == ({"CPU": 1.0}, {"CPU": 1.0})
    assert plan.global_batch_size == 64 and plan.torch_threads == 1


def test_gpu_workers_resolve_to_nccl_and_reserve_gpus():
    job = job_config(["scaling.gpus_per_worker=1", "scaling.num_workers=4"])
    plan = plan_job(job, _cluster({"CPU": 16.0, "GPU": 8.0}))
    assert plan.backend == "nccl" and plan.bundles[0] == {"CPU": 1.0, "GPU": 1.0}


def test_gpus_requested_on_a_cpu_cluster_say_what_to_change():
    job = job_config(["scaling.gpus_per_worker=1"])
    with pytest.raises(PlanError) as raised:
        plan_job(job, _cluster({"CPU": 8.0}))
    assert str(raised.value) == (
        "job needs 2 GPUs, cluster has 0: set scaling.gpus_per_worker=0 or set cluster.address to a GPU cluster"
    )


def test_an_embedded_cluster_too_small_fails_now_but_an_external_one_may_grow():
    job = job_config(["scaling.num_workers=3"])
    with pytest.raises(PlanError, match=r"job needs 3 CPUs \(3 workers x 1\), the embedded cluster has 2"):
        plan_job(job, _cluster({"CPU": 2.0}, fixed_size=True))
    assert plan_job(job, _cluster({"CPU": 2.0})).world_size == 3


def test_fractional_cpus_still_get_one_torch_thread():
    job = job_config(["scaling.cpus_per_worker=0.5"])
    plan = plan_job(job, _cluster({"CPU": 2.0}))
    assert plan.torch_threads == 1 and plan.bundles[0] == {"CPU": 0.5}


def test_backend_resolution():
    assert resolve_backend("auto", 0) == "gloo"
    assert resolve_backend("auto", 1) == "nccl"
    assert resolve_backend("gloo", 1) == "gloo"


def test_workers_per_node_makes_one_bundle_per_node_spread_strictly():
    job = job_config(
        [
            "scaling.num_workers=8",
            "scaling.workers_per_node=4",
            "scaling.gpus_per_worker=1",
            "scaling.memory_per_worker_gb=2",
            "+scaling.resources_per_worker.fast=0.5",
        ]
    )
    plan = plan_job(job, _cluster({"CPU": 32.0, "GPU": 8.0}, {"CPU": 32.0, "GPU": 8.0}))
    gib = 1024**3
    assert plan.strategy == "STRICT_SPREAD" and plan.workers_per_bundle == 4
    assert plan.bundles == ({"CPU": 4.0, "GPU": 4.0, "memory": 8.0 * gib, "fast": 2.0},) * 2
    assert plan.worker_resources == {"CPU": 1.0, "GPU": 1.0, "memory": 2.0 * gib, "fast": 0.5}


def test_nccl_env_is_carried_into_the_plan():
    job = job_config(["+scaling.nccl_env.NCCL_IB_DISABLE=1"])
    assert plan_job(job, _cluster({"CPU": 4.0})).nccl_env == {"NCCL_IB_DISABLE": "1"}
