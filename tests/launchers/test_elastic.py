"""Elastic training on several nodes (ray.cluster_utils): a lost node shrinks the job and a returned one grows it
back with the same global batch, a drained node is left at a checkpoint without spending a restart, SIGTERM to a
worker is a preemption, and a node that kills its ranks twice is excluded."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from launchers.jobs.job_runner import run_job
from orchestrator.cli.console import Console
from orchestrator.train.checkpoint import is_checkpoint
from tests.helpers import (
    assert_no_job_resources,
    compose_job,
    live_actors,
    signal_handlers_kept,
    wait_until,
)
from tests.own_code import importable_package

# the user's own model and data (the data-loader path): each training forward sleeps a little, so the test acts on
# a node while the job is between two known checkpoints; the sleep changes no number
PACED = """
import time

import torch
from torch.utils.data import TensorDataset


class PacedNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4))

    def forward(self, inputs):
        if self.training:
            time.sleep(0.03)
        return self.layers(inputs)


def data():
    generator = torch.Generator().manual_seed(7)
    inputs = torch.randn(528, 16, generator=generator)
    labels = (inputs[:, :4] * torch.arange(1.0, 5.0)).argmax(dim=1)
    # 480 to train on: 20 global batches of 3 workers x 8, so an epoch needs no padding
    return TensorDataset(inputs[:480], labels[:480]), TensorDataset(inputs[480:], labels[480:])
"""

ELASTIC = "elastic_slot"
"""The resource only the test's worker nodes have: one rank per node, none on the head."""


def _overrides(*more: str) -> list[str]:
    return [
        "model._target_=pacedsteps.PacedNet",
        "data._target_=pacedsteps.data",
        "data.batch_size=8",
        "trainer.max_steps=120",
        "trainer.log_every_n_steps=1",
        "checkpoint.every_n_steps=10",
        "checkpoint.keep_last=50",
        "tracking.log_model=false",
        "scaling.num_workers=3",
        f"+scaling.resources_per_worker.{ELASTIC}=1",
        "scaling.placement_timeout_s=5",
        "failure.max_restarts=2",
        *more,
    ]


class WorkerNodes:
    """The module's worker nodes of one CPU and one elastic slot each: node start-ups are the slow part of these
    tests, so they share three. A node a test adds is its own to remove; the tests that take nodes away for good
    run last."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.nodes: list = []

    def add(self, count: int = 1) -> list:
        with signal_handlers_kept():
            new = [self.cluster.add_node(num_cpus=1, resources={ELASTIC: 1}) for _ in range(count)]
        self.cluster.wait_for_nodes()
        self.nodes.extend(new)
        return new

    def remove(self, node) -> None:
        with signal_handlers_kept():
            self.cluster.remove_node(node)
        self.nodes.remove(node)

    def by_id(self, node_id: str):
        return next(node for node in self.nodes if node.node_id == node_id)


@pytest.fixture(scope="module")
def nodes(ray_cluster):
    pool = WorkerNodes(ray_cluster)
    pool.add(3)
    yield pool
    for node in list(pool.nodes):
        pool.remove(node)


@pytest.fixture
def paced(tmp_path, monkeypatch):
    return importable_package(tmp_path / "code", monkeypatch, {"pacedsteps": PACED})


def _start(overrides, tmp_path):
    job = compose_job(overrides, tmp_path)
    holder: dict = {}
    console = io.StringIO()
    thread = threading.Thread(
        target=lambda: holder.update(summary=run_job(job, Console(console, False))), name="test-elastic-job"
    )
    thread.start()
    return job, thread, holder, console


def _until(
    predicate, timeout_s: float, what: str, console: io.StringIO, thread: threading.Thread, holder: dict
) -> None:
    """wait_until while the job runs; a failure shows how the job ended (if it did) and what its console said."""
    try:
        wait_until(lambda: predicate() or not thread.is_alive(), timeout_s, what)
        if predicate():
            return
        ended = holder.get("summary")
        error = f"the job ended first: {ended.outcome.status} {ended.outcome.error}" if ended else "the job raised"
    except AssertionError as timed_out:
        error = str(timed_out)
    raise AssertionError(f"{error}; the job's console:\n{console.getvalue()[-4000:]}")


def _until_checkpoint(runs: Path, step: int, console: io.StringIO, thread: threading.Thread, holder: dict) -> None:
    """Wait for a complete checkpoint at `step` or later."""
    _until(
        lambda: any(at >= step for at in _checkpoint_sizes(runs)),
        120,
        f"a checkpoint at step {step}",
        console,
        thread,
        holder,
    )


def _finish(thread, holder, timeout_s=300):
    thread.join(timeout=timeout_s)
    assert not thread.is_alive(), "the job did not end"
    return holder["summary"]


def _checkpoint_sizes(runs: Path) -> dict[int, int]:
    """step -> world size of every complete checkpoint of the job."""
    sizes = {}
    for path in runs.glob("*/step_*"):
        if is_checkpoint(path) and (path / "orchestrator.json").is_file():
            meta = json.loads((path / "orchestrator.json").read_text())
            sizes[int(meta["step"])] = int(meta["world_size"])
    return sizes


def _run_data(job, run_id):
    from mlflow import MlflowClient

    client = MlflowClient(job.tracking.uri)
    sizes = [(m.step, m.value) for m in client.get_metric_history(run_id, "scaling/world_size")]
    return client.get_run(run_id).data.tags, sorted(sizes)


def _worker_nodes() -> dict[int, str]:
    """pid -> node id of every alive worker actor of orchestrator jobs."""
    return {
        actor.pid: actor.node_id
        for actor in live_actors()
        if actor.state == "ALIVE" and actor.class_name == "WorkerActor" and actor.pid
    }


def _drain(ray_cluster, node_id: str, deadline_s: int) -> None:
    """Drain a node as a cloud autoscaler or KubeRay does before a preemption (`ray drain-node`)."""
    command = [
        str(Path(sys.executable).parent / "ray"),
        "drain-node",
        f"--address={ray_cluster.address}",
        f"--node-id={node_id}",
        "--reason=DRAIN_NODE_REASON_PREEMPTION",
        "--reason-message=spot instance preempted (test)",
        f"--deadline-remaining-seconds={deadline_s}",
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=60, env={**os.environ, "RAY_ADDRESS": ""})


def _job_workers() -> list:
    return [
        actor
        for actor in live_actors()
        if actor.state == "ALIVE"
        and actor.class_name == "WorkerActor"
        and (actor.name or "").startswith("orchestrator-")
    ]


def test_a_spare_takes_over_a_killed_rank_and_a_new_spare_starts(ray_cluster, nodes, paced, tmp_path):
    job, thread, holder, console = _start(
        _overrides("scaling.num_workers=2", "failure.spare_workers=1", "trainer.max_steps=100"), tmp_path
    )
    runs = tmp_path / "checkpoints"
    _until_checkpoint(runs, 20, console, thread, holder)
    workers: list = []

    def started():
        workers.append(sorted((int(a.name.rsplit("worker", 1)[1]), a.pid) for a in _job_workers()))
        return len(workers[-1]) == 3

    wait_until(started, 60, "two ranks and a spare")
    (_, rank_pid), _, (_, spare_pid) = workers[-1]  # spawned in bundle order: the spare's bundle is last
    os.kill(rank_pid, signal.SIGKILL)
    summary = _finish(thread, holder)
    outcome = summary.outcome
    assert outcome.status == "FINISHED", (outcome.error, console.getvalue())
    assert len(outcome.attempts) == 2, (outcome.attempts, console.getvalue())
    first, second = ({spec.pid for spec in attempt.workers} for attempt in outcome.attempts)
    assert rank_pid in first and spare_pid not in first
    assert second == (first - {rank_pid}) | {spare_pid}  # the spare took the rank over, the survivor stayed
    tags, _ = _run_data(job, summary.run_id)
    print({key: value for key, value in tags.items() if key.startswith("restart.1.") and key.endswith("_s")})
    assert_no_job_resources()


def test_a_node_that_kills_its_ranks_twice_is_excluded(ray_cluster, nodes, paced, tmp_path):
    job, thread, holder, console = _start(
        _overrides("scaling.num_workers=2", "failure.max_restarts=3", "trainer.max_steps=100"), tmp_path
    )
    runs = tmp_path / "checkpoints"
    killed: list[int] = []
    bad: list[str] = []
    for round_ in range(2):
        wait_until(lambda: any(step >= 10 * (round_ + 1) for step in _checkpoint_sizes(runs)), 120, "a checkpoint")
        found: list = []

        def on_bad_node():
            found.append({pid: node for pid, node in _worker_nodes().items() if pid not in killed})
            return len(found[-1]) == 2 and (not bad or bad[0] in found[-1].values())

        wait_until(on_bad_node, 120, "both ranks running")
        pid, node = next((pid, node) for pid, node in sorted(found[-1].items()) if not bad or node == bad[0])
        bad[:] = [node]
        killed.append(pid)
        os.kill(pid, signal.SIGKILL)
    summary = _finish(thread, holder)
    outcome = summary.outcome
    assert outcome.status == "FINISHED", (outcome.error, console.getvalue())
    tags, _ = _run_data(job, summary.run_id)
    assert tags["restart.2.excluded_node"].endswith(f"({bad[0][:8]})")
    assert bad[0] not in {spec.node_id for spec in outcome.workers}
    assert "is excluded from this job" in console.getvalue()
    assert_no_job_resources()


def test_sigterm_to_a_worker_shrinks_an_elastic_job_at_once(ray_cluster, nodes, paced, tmp_path):
    job, thread, holder, console = _start(
        _overrides("scaling.min_workers=2", "failure.max_restarts=0", "trainer.max_steps=100"), tmp_path
    )
    runs = tmp_path / "checkpoints"
    _until_checkpoint(runs, 20, console, thread, holder)
    workers: list = []
    wait_until(lambda: workers.append(_worker_nodes()) or len(workers[-1]) == 3, 60, "three ranks running")
    pid, node = sorted(workers[-1].items())[0]
    os.kill(pid, signal.SIGTERM)
    summary = _finish(thread, holder)
    outcome = summary.outcome
    assert outcome.status == "FINISHED", (outcome.error, console.getvalue())
    tags, world_sizes = _run_data(job, summary.run_id)
    assert tags["restart.1.kind"] == "preempted" and "got SIGTERM" in tags["restart.1.reason"]
    assert [tags["resize.1.reason"], tags["resize.1.to"]] == ["preempted", "2"]
    assert node not in {spec.node_id for spec in outcome.workers} and len(outcome.workers) == 2
    assert_no_job_resources()


@pytest.mark.timeout(600)  # a reference run, then a run that shrinks and grows
def test_a_lost_node_shrinks_the_job_and_a_returned_one_grows_it_back_with_the_same_batches(
    ray_cluster, nodes, paced, tmp_path
):
    reference = run_job(compose_job(_overrides(), tmp_path / "reference"), Console(io.StringIO(), False)).outcome
    assert reference.status == "FINISHED", reference.error

    overrides = _overrides("scaling.min_workers=2", "scaling.resize_check_s=1")
    job, thread, holder, console = _start(overrides, tmp_path / "elastic")
    runs = tmp_path / "elastic" / "checkpoints"
    _until_checkpoint(runs, 30, console, thread, holder)
    nodes.remove(nodes.nodes[0])
    _until(lambda: 2 in _checkpoint_sizes(runs).values(), 120, "2 workers' checkpoint", console, thread, holder)
    [returned] = nodes.add(1)
    summary = _finish(thread, holder)
    outcome = summary.outcome
    assert outcome.status == "FINISHED", (outcome.error, console.getvalue())
    assert len(outcome.workers) == 3

    tags, world_sizes = _run_data(job, summary.run_id)
    assert [tags["resize.1.reason"], tags["resize.1.from"], tags["resize.1.to"]] == ["lost", "3", "2"]
    assert [tags["resize.2.reason"], tags["resize.2.from"], tags["resize.2.to"]] == ["grow", "2", "3"]
    shrunk, grown = int(tags["resize.1.step"]), int(tags["resize.2.step"])
    assert 30 <= shrunk < grown < 120
    # the world size at the step where each attempt took effect
    assert (shrunk, 2.0) in world_sizes and (grown, 3.0) in world_sizes and world_sizes[0] == (0, 3.0)
    sizes = _checkpoint_sizes(runs)
    assert {sizes[step] for step in sizes if shrunk < step <= grown} == {2}
    # keep_global: every step on 2 workers averaged the same 24 samples as on 3, so the parameters are those of
    # the run that never resized up to float summation order (2 partial sums instead of 3, 6-sample micro-batches
    # instead of 8): about 1e-7 relative per step, well under 1e-4 after 120 steps
    for name, weight in outcome.result.model_state.items():
        torch.testing.assert_close(weight, reference.result.model_state[name], rtol=1e-4, atol=1e-5)
    assert_no_job_resources()
    nodes.remove(returned)  # a node a test adds is its own


def test_a_drained_node_is_left_at_a_checkpoint_before_its_deadline_without_spending_a_restart(
    ray_cluster, nodes, paced, tmp_path
):
    job, thread, holder, console = _start(
        _overrides("scaling.num_workers=2", "scaling.min_workers=1", "failure.max_restarts=0", "trainer.max_steps=400"),
        tmp_path,
    )
    runs = tmp_path / "checkpoints"
    _until_checkpoint(runs, 20, console, thread, holder)
    workers: list = []
    wait_until(lambda: workers.append(_worker_nodes()) or len(workers[-1]) == 2, 60, "both ranks running")
    drained = sorted(workers[-1].values())[0]
    drained_at = time.time()
    _drain(ray_cluster, drained, deadline_s=60)
    summary = _finish(thread, holder)
    outcome = summary.outcome
    assert outcome.status == "FINISHED", (outcome.error, console.getvalue())
    assert outcome.restarts == 1  # with failure.max_restarts=0
    tags, _ = _run_data(job, summary.run_id)
    assert tags["restart.1.kind"] == "preempted" and "is being drained" in tags["restart.1.reason"]
    resumed = int(tags["restart.1.resumed_from_step"])
    # the just-in-time checkpoint: written after the drain began and long before its deadline
    written = (runs / summary.run_id / f"step_{resumed:09d}" / "orchestrator.json").stat().st_mtime
    assert drained_at < written < drained_at + 60
    assert drained not in {spec.node_id for spec in outcome.workers}
    assert_no_job_resources()
    assert len(outcome.workers) == 1  # the last two nodes of the module: it continued on the other one
    nodes.remove(nodes.by_id(drained))  # what the drain announced
