"""k8s/: each overlay renders, every resource validates strictly, and the install is reviewable:
no secret values in manifests, resources, probes and non-root security everywhere, GPU settings right."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from orchestrator.kubernetes import rayjob as manifests
from tests.k8s.validators import (
    OVERLAYS,
    REPO,
    containers,
    copy_with_env_files,
    core_errors,
    crd_errors,
    errors,
    ray_start_params_set_twice,
    render_overlay,
)

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """overlay -> its rendered documents (rendered once for the module: kubectl is a subprocess)."""
    k8s_copy = copy_with_env_files(tmp_path_factory.mktemp("k8s"))
    return {overlay: render_overlay(k8s_copy, overlay) for overlay in OVERLAYS}


def _kinds(documents) -> list[str]:
    return sorted(document["kind"] for document in documents)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_stack(rendered, overlay):
    assert _kinds(rendered[overlay]) == sorted(
        [
            "Namespace",
            "ConfigMap",
            "Secret",
            "Secret",
            "Service",
            "Service",
            "Service",
            "PersistentVolumeClaim",
            "Deployment",
            "StatefulSet",
            "StatefulSet",
            "NetworkPolicy",
            "NetworkPolicy",
            "RayCluster",
        ]
    )
    assert {document["metadata"].get("namespace", "orchestrator") for document in rendered[overlay]} == {"orchestrator"}


def _problems(documents, check) -> dict[str, list[str]]:
    found = {f"{d['kind']}/{d['metadata']['name']}": check(d) for d in documents}
    return {name: problems for name, problems in found.items() if problems}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_resource_validates_strictly(rendered, overlay):
    core = [d for d in rendered[overlay] if not d["apiVersion"].startswith("ray.io/")]
    assert core and _problems(core, core_errors) == {}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_resource_validates_against_the_kuberay_crds(rendered, overlay):
    ray = [d for d in rendered[overlay] if d["apiVersion"].startswith("ray.io/")]
    assert ray and _problems(ray, crd_errors) == {}


def test_no_secret_value_is_written_in_a_manifest(rendered):
    sources = [path for path in (REPO / "k8s").rglob("*.yaml")]
    assert not [path for path in sources if re.search(r"^kind:\s*Secret\b", path.read_text(), re.MULTILINE)]
    for documents in rendered.values():
        for where, _, container in (item for document in documents for item in containers(document)):
            for variable in container.get("env", []):
                if SECRET_NAME.search(variable["name"]) and variable["name"] != "MLFLOW_BACKEND_STORE_URI":
                    assert "secretKeyRef" in variable.get("valueFrom", {}), (
                        f"{where}: {variable['name']} is not from a Secret"
                    )
    for copied in ("k8s/base/postgres.env", "k8s/base/minio.env"):
        ignored = subprocess.run(["git", "check-ignore", "-q", copied], cwd=REPO)
        assert ignored.returncode == 0, f"{copied} (real credentials) must be git-ignored"


def test_secret_generator_takes_the_keys_of_the_examples(rendered):
    secrets = {
        d["metadata"]["name"].rsplit("-", 1)[0]: sorted(d["data"]) for d in rendered["cpu-dev"] if d["kind"] == "Secret"
    }
    assert secrets == {
        "minio-credentials": ["MINIO_ROOT_PASSWORD", "MINIO_ROOT_USER"],
        "postgres-credentials": ["POSTGRES_PASSWORD", "POSTGRES_USER"],
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_runs_unprivileged_as_non_root(rendered, overlay):
    for document in rendered[overlay]:
        for where, pod, container in containers(document):
            resources = container.get("resources", {})
            for side in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(side, {})), f"{where}: {side} missing"
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}, where


def test_services_have_readiness_and_liveness_probes(rendered):
    for document in rendered["cpu-dev"]:
        if document["kind"] in ("Deployment", "StatefulSet"):
            for container in document["spec"]["template"]["spec"]["containers"]:
                assert {"readinessProbe", "livenessProbe"} <= set(container), document["metadata"]["name"]


def test_mlflow_stores_runs_in_postgres_and_proxies_artifacts_to_minio(rendered):
    mlflow = next(d for d in rendered["cpu-dev"] if d["kind"] == "Deployment")
    server = mlflow["spec"]["template"]["spec"]["containers"][0]
    env = {variable["name"]: variable for variable in server["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith(
        "postgresql://$(POSTGRES_USER):$(POSTGRES_PASSWORD)@postgres:5432/"
    )
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert {"--serve-artifacts", "--artifacts-destination=s3://mlflow/artifacts", "--port=5000"} <= set(server["args"])
    service = next(
        d for d in rendered["cpu-dev"] if d["kind"] == "Service" and d["metadata"]["name"] == manifests.MLFLOW_SERVICE
    )
    assert service["spec"]["ports"][0]["port"] == manifests.MLFLOW_PORT


def test_cpu_dev_workers_are_small_cpu_pods_on_a_single_node_volume(rendered):
    cluster = next(d for d in rendered["cpu-dev"] if d["kind"] == "RayCluster")
    worker = cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"] == {"cpu": "3", "memory": "4Gi"}
    assert ray_start_params_set_twice(cluster) == []
    claim = next(d for d in rendered["cpu-dev"] if d["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_gpu_workers_request_gpus_in_limits_only_on_gpu_nodes_with_shared_memory(rendered):
    cluster = next(d for d in rendered["gpu"] if d["kind"] == "RayCluster")
    group = cluster["spec"]["workerGroupSpecs"][0]
    pod = group["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1" and resources["requests"] == resources["limits"]
    assert "num-gpus" not in group["rayStartParams"] and ray_start_params_set_twice(cluster) == []
    assert all(isinstance(value, str) for value in group["rayStartParams"].values())
    assert pod["nodeSelector"] == manifests.GPU_NODE_SELECTOR
    assert pod["tolerations"] == list(manifests.GPU_TOLERATIONS)
    shm = {volume["name"]: volume for volume in pod["volumes"]}["dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]
    claim = next(d for d in rendered["gpu"] if d["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_env_examples_list_every_secret_key_the_manifests_read(rendered):
    keys = {
        line.split("=", 1)[0]
        for path in (REPO / "k8s").rglob("*.env.example")
        for line in path.read_text().splitlines()
        if line and not line.startswith("#")
    }
    referenced = {
        variable["valueFrom"]["secretKeyRef"]["key"]
        for document in rendered["cpu-dev"]
        for _, _, container in containers(document)
        for variable in container.get("env", [])
        if "secretKeyRef" in variable.get("valueFrom", {})
    }
    assert referenced == keys


def test_base_raycluster_is_a_valid_ray_resource_as_written():
    cluster = yaml.safe_load((REPO / "k8s" / "base" / "raycluster.yaml").read_text())
    assert errors(cluster) == []
