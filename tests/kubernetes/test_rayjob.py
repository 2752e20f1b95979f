"""`orchestrator k8s`: the RayJob it renders is valid, sized to what the job reserves, consistent
with k8s/base, and stable (golden files); a bad config never becomes a manifest.

Regenerate the golden files after an intended change, then review the diff:
    ORCHESTRATOR_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/kubernetes/test_rayjob.py -k golden
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.commands import main
from orchestrator.kubernetes import rayjob as manifests
from orchestrator.planning.placement import predict_placement
from orchestrator.planning.plan import GIB, ClusterSnapshot, NodeSnapshot, plan_job
from tests.helpers import compose_job
from tests.k8s.validators import REPO, crd_errors, ray_start_params_set_twice

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "k8s" / "golden"
TARGET = ["--image", "registry.example.com/ml/orchestrator:0.1.0", "--namespace", "ml-team", "--name", "digits-demo"]
CONFIGS = {
    "cpu": ["trainer.max_epochs=2"],
    "gpu-4-workers": [
        "scaling.num_workers=4",
        "scaling.gpus_per_worker=1",
        "scaling.cpus_per_worker=4",
        "scaling.memory_per_worker_gb=16",
    ],
    "gpu-2-nodes-x-8": [
        "scaling.num_workers=16",
        "scaling.workers_per_node=8",
        "scaling.gpus_per_worker=1",
        "scaling.cpus_per_worker=8",
        "scaling.memory_per_worker_gb=32",
        "+scaling.resources_per_worker={accelerator_type\\:H100:0.001}",
    ],
}
MORE_CONFIGS = {
    "fractional-cpus": ["scaling.num_workers=6", "scaling.workers_per_node=3", "scaling.cpus_per_worker=0.5"],
    "fractional-gpus": ["scaling.num_workers=2", "scaling.gpus_per_worker=0.5"],
    "runtime-env": ["+cluster.runtime_env={env_vars:{NCCL_DEBUG:INFO}}", "data=synthetic", "model=mlp"],
}


def _render(overrides, tmp_path, **target) -> dict:
    return manifests.render_rayjob(compose_job(overrides, tmp_path), overrides, manifests.RayJobTarget(**target))


def _worker_group(document: dict) -> dict:
    return document["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


# --- pod sizing ------------------------------------------------------------------------------------


def test_without_workers_per_node_every_worker_gets_its_own_pod(tmp_path):
    pods = manifests.worker_pod_spec(compose_job([], tmp_path).scaling)
    assert pods == manifests.WorkerPodSpec(replicas=2, workers_per_pod=1, cpus=2, memory_mib=4 * 1024, gpus=0)


def test_workers_per_node_makes_one_pod_per_node_holding_its_workers(tmp_path):
    pods = manifests.worker_pod_spec(compose_job(CONFIGS["gpu-2-nodes-x-8"], tmp_path).scaling)
    assert (pods.replicas, pods.workers_per_pod, pods.gpus, pods.cpus) == (2, 8, 8, 8 * 8 + 1)
    assert pods.memory_mib == (8 * 32 + 2) * 1024
    assert pods.custom_resources == {"accelerator_type:H100": pytest.approx(0.008)}


def test_fractions_round_up_to_whole_pod_resources_without_float_noise(tmp_path):
    assert manifests.worker_pod_spec(compose_job(MORE_CONFIGS["fractional-cpus"], tmp_path).scaling).cpus == 2 + 1
    seven = compose_job(
        ["scaling.num_workers=10", "scaling.workers_per_node=10", "scaling.cpus_per_worker=0.7"], tmp_path
    )
    assert manifests.worker_pod_spec(seven.scaling).cpus == 7 + 1  # 0.7 * 10 = 7.000000000000001
    half_gpu = manifests.worker_pod_spec(compose_job(MORE_CONFIGS["fractional-gpus"], tmp_path).scaling)
    assert (half_gpu.replicas, half_gpu.gpus) == (2, 1)
    odd_memory = compose_job(["scaling.memory_per_worker_gb=1.5"], tmp_path)
    assert manifests.worker_pod_spec(odd_memory.scaling).memory_mib == 3584


def _ray_node(node_id: str, group: dict) -> NodeSnapshot:
    """What Ray sees on a pod of this group: KubeRay derives num-cpus, memory and num-gpus from the limits."""
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    params = group["rayStartParams"]
    resources = {
        "CPU": float(params.get("num-cpus", limits["cpu"])),
        "memory": float(re.sub(r"Gi$|Mi$", "", limits["memory"])) * (GIB if limits["memory"].endswith("Gi") else 2**20),
    }
    if "nvidia.com/gpu" in limits:
        resources["GPU"] = float(limits["nvidia.com/gpu"])
    if "resources" in params:
        resources.update(json.loads(shlex.split(params["resources"])[0]))
    return NodeSnapshot(node_id=node_id, ip=node_id, total=resources, available=dict(resources))


def _cluster_of(document: dict) -> ClusterSnapshot:
    spec = document["spec"]["rayClusterSpec"]
    group = _worker_group(document)
    workers = [_ray_node(f"worker-{index}", group) for index in range(group["replicas"])]
    return ClusterSnapshot(nodes=(_ray_node("head", spec["headGroupSpec"]), *workers))


@pytest.mark.parametrize("name", [*CONFIGS, *MORE_CONFIGS])
def test_the_job_fits_the_pods_the_rayjob_creates(tmp_path, name):
    overrides = {**CONFIGS, **MORE_CONFIGS}[name]
    job = compose_job(overrides, tmp_path)
    document = manifests.render_rayjob(job, overrides, manifests.RayJobTarget())
    plan = plan_job(job, _cluster_of(document))
    prediction = predict_placement(plan, _cluster_of(document))
    assert prediction.placeable, prediction.problems
    assert "head" not in prediction.nodes  # num-cpus 0 keeps every worker off the head
    if job.scaling.workers_per_node:
        assert sorted(prediction.nodes) == [f"worker-{index}" for index in range(len(plan.bundles))]


def test_a_pod_one_cpu_smaller_would_not_hold_a_node_of_workers(tmp_path):
    overrides = CONFIGS["gpu-2-nodes-x-8"]
    job = compose_job(overrides, tmp_path)
    document = manifests.render_rayjob(job, overrides, manifests.RayJobTarget())
    limits = _worker_group(document)["template"]["spec"]["containers"][0]["resources"]["limits"]
    limits["cpu"] = str(int(limits["cpu"]) - manifests.POD_CPU_HEADROOM - 1)
    assert not predict_placement(plan_job(job, _cluster_of(document)), _cluster_of(document)).placeable


# --- restarts, entrypoint, overrides ---------------------------------------------------------------


def test_backoff_limit_follows_the_restart_budget(tmp_path):
    assert [manifests.backoff_limit(budget) for budget in (0, 1, 3, -1)] == [0, 1, 1, 1]
    assert _render(["failure.max_restarts=0"], tmp_path)["spec"]["backoffLimit"] == 0
    assert _render(["failure.max_restarts=-1"], tmp_path)["spec"]["backoffLimit"] == 1


def test_rayjob_cleans_up_after_itself(tmp_path):
    spec = _render([], tmp_path)["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 600
    assert spec["backoffLimit"] == 1


def test_override_keys():
    assert [manifests.override_key(o) for o in ("a.b=1", "+a.b=1", "++a.b={x:1}", "~a.b", "model=mlp", "db@x.y=z")] == [
        "a.b",
        "a.b",
        "a.b",
        "a.b",
        "model",
        "db",
    ]


def test_entrypoint_adds_the_cluster_mlflow_and_checkpoint_volume_unless_set(tmp_path):
    command = shlex.split(_render(["model=mlp"], tmp_path, namespace="ml")["spec"]["entrypoint"])
    assert command == [
        "orchestrator",
        "train",
        "model=mlp",
        "cluster.address=auto",
        "tracking.uri=http://mlflow.ml.svc.cluster.local:5000",
        "checkpoint.dir=/mnt/checkpoints",
    ]
    own = ["tracking.uri=http://mlflow.other:5000", "checkpoint.dir=/data/ckpt"]
    assert shlex.split(_render(own, tmp_path)["spec"]["entrypoint"]) == [
        "orchestrator",
        "train",
        *own,
        "cluster.address=auto",
    ]


def test_overrides_are_quoted_for_the_shell(tmp_path):
    tricky = ["tracking.run_name='a run; rm -rf $HOME'", "model=mlp", "model.hidden_sizes=[8,4]"]
    command = _render(tricky, tmp_path)["spec"]["entrypoint"]
    assert shlex.split(command)[2:5] == tricky
    assert "'model.hidden_sizes=[8,4]'" in command


def test_runtime_env_becomes_the_rayjob_runtime_env(tmp_path):
    spec = _render(MORE_CONFIGS["runtime-env"], tmp_path)["spec"]
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == {"env_vars": {"NCCL_DEBUG": "INFO"}}
    assert "runtimeEnvYAML" not in _render([], tmp_path)["spec"]


# --- the command -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["scaling.num_workers=0", "trainer.amp=fp8"], "scaling.num_workers=0 is not valid: must be a number >= 1"),
        (["trainer.amp=fp8"], "trainer.amp=fp8 is not valid: use one of none, bf16, fp16"),
        (["scaling.num_workers=3", "scaling.workers_per_node=2"], "scaling.workers_per_node=2 is not valid"),
        (["scaling.num_workers=abc"], "scaling.num_workers=abc is not valid: must be an integer"),
        (["scaling.bogus=1"], "scaling.bogus=1 is not valid: scaling has no key bogus"),
        (["cluster.address=ray://head:10001"], "cluster.address=ray://head:10001 is not valid for orchestrator k8s"),
        (["--name", "Digits_Demo"], "--name=Digits_Demo is not valid"),
        (["--name", "x" * 48], "is not valid: use at most 47"),
        (["--namespace", "ML"], "--namespace=ML is not valid"),
    ],
)
def test_a_bad_config_exits_2_and_prints_no_manifest(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert main(["k8s", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and message in captured.err


def test_unknown_flag_is_a_usage_error(capsys):
    assert main(["k8s", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_default_name_is_new_for_every_run_and_valid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    names = set()
    for _ in range(5):  # well within one second: the timestamp alone would repeat
        assert main(["k8s"]) == 0
        document = yaml.safe_load(capsys.readouterr().out)
        assert document["metadata"]["namespace"] == "orchestrator"
        names.add(document["metadata"]["name"])
    assert len(names) == 5
    for name in names:  # a DNS-1123 label, as Kubernetes requires of a RayJob's name
        assert re.fullmatch(r"orchestrator-\d{8}-\d{6}-[0-9a-f]{4}", name) and len(name) <= 63


@pytest.mark.parametrize("name", list(CONFIGS))
def test_golden_rayjob(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    assert main(["k8s", *CONFIGS[name], *TARGET]) == 0
    rendered = capsys.readouterr().out
    golden = GOLDEN_DIR / f"rayjob-{name}.yaml"
    if os.environ.get("ORCHESTRATOR_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert golden.is_file(), f"{golden} is missing: regenerate with ORCHESTRATOR_UPDATE_GOLDEN=1 (module docstring)"
    assert rendered == golden.read_text(), f"the RayJob for {name} changed: review it, then regenerate {golden.name}"


# --- validity and consistency ----------------------------------------------------------------------


@pytest.mark.parametrize("name", [*CONFIGS, *MORE_CONFIGS])
def test_rendered_rayjob_validates_against_the_kuberay_crd(tmp_path, name):
    document = yaml.safe_load(manifests.to_yaml(_render({**CONFIGS, **MORE_CONFIGS}[name], tmp_path)))
    assert crd_errors(document) == []


@pytest.mark.parametrize("name", [*CONFIGS, *MORE_CONFIGS])
def test_rendered_rayjob_sets_each_resource_once_as_strings(tmp_path, name):
    document = yaml.safe_load(manifests.to_yaml(_render({**CONFIGS, **MORE_CONFIGS}[name], tmp_path)))
    assert ray_start_params_set_twice(document) == []
    group = _worker_group(document)
    assert all(isinstance(value, str) for value in group["rayStartParams"].values())
    resources = group["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"]


def test_gpu_workers_go_to_gpu_nodes_with_shared_memory_and_cpu_workers_do_not(tmp_path):
    gpu = _worker_group(_render(CONFIGS["gpu-4-workers"], tmp_path))["template"]["spec"]
    assert gpu["nodeSelector"] == manifests.GPU_NODE_SELECTOR and gpu["tolerations"] == list(manifests.GPU_TOLERATIONS)
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "18Gi"}} in gpu["volumes"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    cpu = _worker_group(_render([], tmp_path))["template"]["spec"]
    assert "nodeSelector" not in cpu and "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]


def test_rayjob_cluster_is_built_like_the_base_raycluster(tmp_path):
    base = yaml.safe_load((REPO / "k8s" / "base" / "raycluster.yaml").read_text())["spec"]
    rendered = _render([], tmp_path)["spec"]["rayClusterSpec"]
    for key in ("rayVersion", "authOptions"):
        assert rendered[key] == base[key]
    assert rendered["headGroupSpec"]["rayStartParams"] == base["headGroupSpec"]["rayStartParams"]
    assert [g["groupName"] for g in rendered["workerGroupSpecs"]] == [g["groupName"] for g in base["workerGroupSpecs"]]
    pairs = [
        (rendered["headGroupSpec"], base["headGroupSpec"]),
        (_worker_group({"spec": {"rayClusterSpec": rendered}}), base["workerGroupSpecs"][0]),
    ]
    for ours, theirs in pairs:
        ours, theirs = ours["template"]["spec"], theirs["template"]["spec"]
        assert ours["securityContext"] == theirs["securityContext"] and ours["volumes"] == theirs["volumes"]
        for key in ("name", "image", "env", "securityContext", "volumeMounts"):
            assert ours["containers"][0][key] == theirs["containers"][0][key], key


def _setting(path: str, pattern: str) -> str:
    found = re.search(pattern, (REPO / path).read_text(), re.MULTILINE)
    assert found, f"{pattern} not in {path}"
    return found.group(1)


def test_the_image_pins_the_ray_of_the_manifests_and_the_torch_of_the_dev_machines():
    base = yaml.safe_load((REPO / "k8s" / "base" / "raycluster.yaml").read_text())["spec"]["rayVersion"]
    assert _setting("Dockerfile", r"^ARG RAY_VERSION=(\S+)$") == base == manifests.RAY_VERSION
    assert _setting("Dockerfile", r"^ARG TORCH_VERSION=(\S+)$") == _setting("Makefile", r"^TORCH_VERSION := (\S+)$")
