"""Several nodes on one machine (ray.cluster_utils): placement, rank layout, preflight, timeouts."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import ray

from launchers.jobs.job_runner import run_job
from orchestrator.cli.commands import main
from orchestrator.cli.console import Console
from tests.helpers import assert_no_job_resources, compose_job, signal_handlers_kept

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_script.py"
SMALL = ["model=mlp", "trainer.max_steps=3", "tracking.log_model=false", "data.batch_size=8"]


@pytest.fixture(scope="module")
def three_nodes(ray_cluster):
    """Nodes b and c join the session's head for this module: 2 CPUs each, marker resources, and 2 `pin`s."""
    with signal_handlers_kept():
        added = [
            ray_cluster.add_node(num_cpus=2, resources={"node_b": 100, "pin": 2}),
            ray_cluster.add_node(num_cpus=2, resources={"node_c": 100, "pin": 2}),
        ]
    ray_cluster.wait_for_nodes()
    yield ray_cluster
    with signal_handlers_kept():
        for node in added:
            ray_cluster.remove_node(node)


def _names() -> dict[str, str]:
    names = {}
    for node in ray.nodes():
        resources = node["Resources"]
        names[node["NodeID"]] = "b" if "node_b" in resources else "c" if "node_c" in resources else "head"
    return names


def _run(overrides, tmp_path):
    job = compose_job(overrides, tmp_path)
    return run_job(job, Console(io.StringIO(), interactive=False, out=io.StringIO())).outcome


def _layout(workers) -> list[tuple[int, str, int, int]]:
    names = _names()
    return [(w.world_rank, names[w.node_id], w.node_rank, w.local_rank) for w in workers]


def test_pack_keeps_workers_together_and_strict_spread_gives_each_its_own_node(three_nodes, tmp_path):
    packed = _run(SMALL + ["scaling.num_workers=2", "scaling.placement_strategy=PACK"], tmp_path / "pack")
    spread = _run(SMALL + ["scaling.num_workers=3", "scaling.placement_strategy=STRICT_SPREAD"], tmp_path / "spread")
    assert packed.status == spread.status == "FINISHED", (packed.error, spread.error)
    assert len({name for _, name, _, _ in _layout(packed.workers)}) == 1
    assert sorted(name for _, name, _, _ in _layout(spread.workers)) == ["b", "c", "head"]
    assert [node_rank for _, _, node_rank, _ in _layout(spread.workers)] == [0, 1, 2]
    for outcome in (packed, spread):
        assert len({result.params_digest for result in outcome.rank_results.values()}) == 1


def test_workers_per_node_gives_contiguous_ranks_and_torchrun_variables(three_nodes, tmp_path):
    out = tmp_path / "weights.pt"
    overrides = [
        "entrypoint=script",
        f"script.path={SCRIPT}",
        f"script.args=[--steps,3,--out,{out}]",
        "scaling.num_workers=4",
        "scaling.workers_per_node=2",
        "+scaling.resources_per_worker.pin=1",
        "+scaling.nccl_env.NCCL_DEBUG=WARN",
    ]
    outcome = _run(overrides, tmp_path)
    assert outcome.status == "FINISHED", outcome.error
    layout = _layout(outcome.workers)
    assert {name for _, name, _, _ in layout} == {"b", "c"}
    assert [(rank, node_rank, local_rank) for rank, _, node_rank, local_rank in layout] == [
        (0, 0, 0),
        (1, 0, 1),
        (2, 1, 0),
        (3, 1, 1),
    ]
    assert layout[0][1] == layout[1][1] != layout[2][1] == layout[3][1]
    seen = [json.loads(Path(f"{out}.rank{rank}.json").read_text()) for rank in range(4)]
    for rank, env in enumerate(seen):
        assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"], env["GROUP_RANK"]) == (
            str(rank),
            "4",
            str(rank % 2),
            "2",
            str(rank // 2),
        )
        assert env["MASTER_ADDR"] == outcome.workers[0].node_ip and env["MASTER_PORT"] == seen[0]["MASTER_PORT"]
        assert env["NCCL_DEBUG"] == "WARN"


def _plan_json(overrides, capsys) -> tuple[int, dict]:
    code = main(["plan", "--json", *overrides])
    return code, json.loads(capsys.readouterr().out)


def test_plan_shows_where_the_job_then_runs(three_nodes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    forced = SMALL + ["scaling.num_workers=2", "scaling.workers_per_node=2", "+scaling.resources_per_worker.node_b=1"]
    code, planned = _plan_json(forced, capsys)
    assert code == 0 and planned["placeable"]
    names = _names()
    predicted = [(rank["rank"], names[rank["node_id"]], rank["local_rank"]) for rank in planned["ranks"]]
    assert predicted == [(0, "b", 0), (1, "b", 1)]
    assert planned["ranks"][1]["env"]["LOCAL_WORLD_SIZE"] == "2" and planned["ranks"][1]["env"]["RANK"] == "1"
    outcome = _run(forced, tmp_path)
    assert outcome.status == "FINISHED"
    assert [(rank, name, local_rank) for rank, name, _, local_rank in _layout(outcome.workers)] == predicted

    shared = SMALL + ["scaling.num_workers=4", "scaling.workers_per_node=2", "+scaling.resources_per_worker.pin=1"]
    code, planned = _plan_json(shared, capsys)
    outcome = _run(shared, tmp_path / "shared")
    # b and c are interchangeable for Ray: compare which nodes get how many ranks
    per_node = sorted((names[rank["node_id"]], rank["local_rank"]) for rank in planned["ranks"])
    assert per_node == sorted((name, local_rank) for _, name, _, local_rank in _layout(outcome.workers))


def test_an_unsatisfiable_spread_fails_within_its_timeout_and_leaves_nothing_reserved(
    three_nodes, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    overrides = SMALL + [
        "scaling.num_workers=4",
        "scaling.placement_strategy=STRICT_SPREAD",
        "scaling.placement_timeout_s=3",
    ]
    assert main(["plan", *overrides]) == 1
    assert "STRICT_SPREAD needs 4 distinct nodes, the cluster has 3" in capsys.readouterr().out
    started = time.monotonic()
    outcome = _run(overrides, tmp_path)
    assert time.monotonic() - started < 30
    assert outcome.status == "FAILED"
    assert "was not placed within scaling.placement_timeout_s=3" in outcome.error
    assert "the job asked for 4 bundles of {CPU: 1} (total {CPU: 4}) with strategy STRICT_SPREAD" in outcome.error
    assert outcome.error.count("free now") == 1 and outcome.error.count("{CPU: ") >= 5  # every node listed
    assert_no_job_resources()


def test_a_resource_no_node_has_is_named_by_plan_and_by_the_timeout(three_nodes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = SMALL + ["+scaling.resources_per_worker.gpu_slot=2", "scaling.placement_timeout_s=2"]
    assert main(["plan", *overrides]) == 1
    assert "no node has the resource 'gpu_slot' (each bundle asks for {gpu_slot: 2})" in capsys.readouterr().out
    outcome = _run(overrides, tmp_path)
    assert outcome.status == "FAILED" and "{CPU: 1, gpu_slot: 2}" in outcome.error
    assert_no_job_resources()


def test_gpu_ranks_on_a_node_see_its_job_gpus_in_local_rank_order(three_nodes, tmp_path):
    """Ray assigns each worker one GPU; both ranks must see both, so cuda:LOCAL_RANK is each one's own.

    The node only advertises GPUs (this machine has none); the script does not touch CUDA.
    """
    with signal_handlers_kept():
        gpu_node = three_nodes.add_node(num_cpus=2, num_gpus=2, resources={"node_gpu": 100})
    try:
        out = tmp_path / "weights.pt"
        outcome = _run(
            [
                "entrypoint=script",
                f"script.path={SCRIPT}",
                f"script.args=[--steps,2,--out,{out}]",
                "scaling.num_workers=2",
                "scaling.gpus_per_worker=1",
                "scaling.backend=gloo",
                "+scaling.resources_per_worker.node_gpu=1",
            ],
            tmp_path,
        )
        assert outcome.status == "FINISHED", outcome.error
        seen = [json.loads(Path(f"{out}.rank{rank}.json").read_text()) for rank in range(2)]
        assert seen[0]["CUDA_VISIBLE_DEVICES"] == seen[1]["CUDA_VISIBLE_DEVICES"]
        assert sorted(seen[0]["CUDA_VISIBLE_DEVICES"].split(",")) == ["0", "1"]
        assert [env["LOCAL_RANK"] for env in seen] == ["0", "1"]
        assert [worker.cuda_device for worker in outcome.workers] == [0, 1]
    finally:
        with signal_handlers_kept():
            three_nodes.remove_node(gpu_node)
