"""Pure rank assignment: contiguous ranks per node, stable node order, torchrun's variables."""

from __future__ import annotations

from dataclasses import replace

from orchestrator.planning.plan import JobPlan
from orchestrator.planning.rank_specs import AttemptSpec, PlacedBundle, rank_order, worker_specs


def _plan(world_size: int) -> JobPlan:
    return JobPlan(
        world_size=world_size,
        backend="gloo",
        strategy="SPREAD",
        worker_resources={"CPU": 1.0},
        torch_threads=1,
        global_batch_size=8 * world_size,
    )


def _placed(*node_of_bundle: str) -> list[PlacedBundle]:
    ips = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}
    return [PlacedBundle(bundle_index=i, node_id=node, node_ip=ips[node]) for i, node in enumerate(node_of_bundle)]


def test_ranks_are_contiguous_per_node_in_order_of_each_nodes_first_bundle():
    ordered = rank_order(_placed("b", "a", "b", "a", "c"))
    assert [(b.node_id, b.bundle_index) for b in ordered] == [("b", 0), ("b", 2), ("a", 1), ("a", 3), ("c", 4)]


def test_specs_carry_torchrun_environment():
    specs = worker_specs(_plan(5), _placed("b", "a", "b", "a", "c"), master_port=29500)
    table = [(s.world_rank, s.node_id, s.local_rank, s.node_rank, s.local_world_size) for s in specs]
    assert table == [(0, "b", 0, 0, 2), (1, "b", 1, 0, 2), (2, "a", 0, 1, 2), (3, "a", 1, 1, 2), (4, "c", 0, 2, 1)]
    env = specs[3].env
    assert env == {
        "RANK": "3",
        "WORLD_SIZE": "5",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1",
        "GROUP_WORLD_SIZE": "3",
        "ROLE_RANK": "3",
        "ROLE_WORLD_SIZE": "5",
        "MASTER_ADDR": "10.0.0.2",
        "MASTER_PORT": "29500",
        "OMP_NUM_THREADS": "1",
    }
    assert all(spec.env["MASTER_ADDR"] == "10.0.0.2" for spec in specs)


def test_placement_order_does_not_change_the_rank_table():
    placed = _placed("a", "b", "a", "b")
    assert [s.bundle_index for s in worker_specs(_plan(4), placed, 1)] == [
        s.bundle_index for s in worker_specs(_plan(4), list(reversed(placed)), 1)
    ]


def test_per_node_bundles_hold_consecutive_ranks():
    plan = JobPlan(
        world_size=4,
        backend="nccl",
        strategy="STRICT_SPREAD",
        worker_resources={"CPU": 1.0},
        torch_threads=1,
        global_batch_size=4,
        workers_per_bundle=2,
        nccl_env={"NCCL_DEBUG": "INFO"},
    )
    specs = worker_specs(plan, _placed("b", "a"), master_port=1234)
    assert [(s.world_rank, s.node_id, s.bundle_index, s.local_rank) for s in specs] == [
        (0, "b", 0, 0),
        (1, "b", 0, 1),
        (2, "a", 1, 0),
        (3, "a", 1, 1),
    ]
    assert all(s.env["NCCL_DEBUG"] == "INFO" for s in specs)


def test_every_rank_on_a_node_sees_the_nodes_job_gpus_and_uses_its_local_rank():
    specs = worker_specs(_plan(4), _placed("a", "a", "b", "a"), master_port=1, gpu_ids=[["3"], ["1"], ["0"], ["6"]])
    table = [(s.world_rank, s.node_id, s.local_rank, s.env["CUDA_VISIBLE_DEVICES"], s.cuda_device) for s in specs]
    assert table == [(0, "a", 0, "3,1,0", 0), (1, "a", 1, "3,1,0", 1), (2, "a", 2, "3,1,0", 2), (3, "b", 0, "6", 0)]


def test_an_attempt_gives_every_rank_torchelastics_run_id_restart_count_and_budget():
    attempt = AttemptSpec(run_id="orchestrator-0123456789ab", restart_count=2, max_restarts=3)
    specs = worker_specs(_plan(2), _placed("a", "b"), master_port=1, attempt=attempt)
    assert [{key: value for key, value in spec.env.items() if key.startswith("TORCHELASTIC_")} for spec in specs] == [
        {
            "TORCHELASTIC_RUN_ID": "orchestrator-0123456789ab",
            "TORCHELASTIC_RESTART_COUNT": "2",
            "TORCHELASTIC_MAX_RESTARTS": "3",
        }
    ] * 2
    # a dry run has no attempt yet: no run id to show
    assert not any(key.startswith("TORCHELASTIC_") for key in worker_specs(_plan(2), _placed("a", "b"), 1)[0].env)


def test_thousands_of_ranks_get_their_node_and_local_ranks_from_where_their_bundle_landed():
    nodes, per_node = 512, 8
    plan = replace(_plan(nodes * per_node), workers_per_bundle=per_node)
    # bundle i on node (i * 7) % nodes: rank order follows bundle order, not node names
    placed = [PlacedBundle(i, f"node-{(i * 7) % nodes:03d}", f"10.0.{i // 256}.{i % 256}") for i in range(nodes)]
    gpu_ids = [[str(rank % per_node)] for rank in range(nodes * per_node)]
    specs = worker_specs(plan, placed, master_port=29500, gpu_ids=gpu_ids)
    assert [spec.world_rank for spec in specs] == list(range(nodes * per_node))
    for spec in specs[:: per_node + 1]:
        assert spec.node_rank == spec.bundle_index == spec.world_rank // per_node
        assert spec.node_id == f"node-{(spec.bundle_index * 7) % nodes:03d}"
        assert spec.local_rank == spec.cuda_device == spec.world_rank % per_node
        assert spec.env["GROUP_RANK"] == str(spec.node_rank) and spec.env["GROUP_WORLD_SIZE"] == str(nodes)
        assert spec.env["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7" and spec.env["MASTER_ADDR"] == "10.0.0.0"


def test_a_ranks_environment_is_the_nccl_settings_then_torchruns_variables_then_the_attempts_then_its_gpus():
    plan = replace(_plan(2), nccl_env={"NCCL_DEBUG": "INFO", "MASTER_PORT": "1"})  # a clash: torchrun's value wins
    attempt = AttemptSpec(run_id="run", restart_count=0, max_restarts=1)
    env = worker_specs(plan, _placed("a", "a"), master_port=29500, gpu_ids=[["5"], ["2"]], attempt=attempt)[1].env
    assert list(env.items()) == [
        ("NCCL_DEBUG", "INFO"),
        ("MASTER_PORT", "29500"),
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "1"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("GROUP_RANK", "0"),
        ("GROUP_WORLD_SIZE", "1"),
        ("ROLE_RANK", "1"),
        ("ROLE_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("OMP_NUM_THREADS", "1"),
        ("TORCHELASTIC_RUN_ID", "run"),
        ("TORCHELASTIC_RESTART_COUNT", "0"),
        ("TORCHELASTIC_MAX_RESTARTS", "1"),
        ("CUDA_VISIBLE_DEVICES", "5,2"),
    ]
