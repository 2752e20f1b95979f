"""Pure manifest rendering: a validated JobConfig -> a KubeRay `ray.io/v1` RayJob (a plain dict).

The RayJob brings its own Ray cluster, built like the RayCluster in k8s/base (same image, Ray
version, checkpoint volume, MLflow address, security settings), and runs `orchestrator train` with
the user's overrides on its head. Worker pods are sized from `scaling` the way the job will reserve
them: one pod per placement-group bundle (scaling.workers_per_node workers, or one), so the job's
bundles fit the pods exactly. Imports no ray, mlflow, torch or hydra; the CLI prints the YAML.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import yaml

from orchestrator.config.export import redactor_for
from orchestrator.config.schema import JobConfig, ScalingConfig
from orchestrator.errors import ConfigError
from orchestrator.planning.plan import worker_resources
from orchestrator.redaction import Redactor, is_secret_key

RAY_VERSION = "2.60.0"
"""The Ray in the image (Dockerfile RAY_VERSION); KubeRay configures the pods for it."""
DEFAULT_IMAGE = "orchestrator:0.1.0"
DEFAULT_NAMESPACE = "orchestrator"
DEFAULT_SECRET = "orchestrator-job-secrets"
RUNTIME_ENV_KEY = "cluster.runtime_env"
MLFLOW_SERVICE = "mlflow"
MLFLOW_PORT = 5000
CHECKPOINT_CLAIM = "orchestrator-checkpoints"
CHECKPOINT_MOUNT = "/mnt/checkpoints"
TTL_SECONDS_AFTER_FINISHED = 600
"""How long the finished job's Ray cluster stays up (logs, dashboard) before KubeRay deletes it."""
POD_CPU_HEADROOM = 1
"""CPUs per worker pod on top of its workers' share: raylet, object store and the actors' I/O."""
POD_MEMORY_HEADROOM_GB = 2
"""GiB per worker pod on top of its workers' budget: raylet, object store, the CUDA context."""
DEFAULT_WORKER_MEMORY_GB_PER_CPU = 2
"""A worker's memory budget per reserved CPU when scaling.memory_per_worker_gb is null (at least 2 GiB)."""
HEAD_MIN_MEMORY_GB = 4
GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
GPU_TOLERATIONS = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)
RAYJOB_NAME_MAX = 47  # KubeRay appends 6 characters for the cluster, whose name may have 53
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class RayJobTarget:
    """Where and as what the RayJob is deployed: the CLI's --image, --namespace and --name."""

    image: str = DEFAULT_IMAGE
    namespace: str = DEFAULT_NAMESPACE
    name: str = "orchestrator-job"
    secret: str = DEFAULT_SECRET
    """The Kubernetes Secret the pods read the job's secret environment variables from (--secret)."""


@dataclass(frozen=True)
class WorkerPodSpec:
    """One worker pod of the RayJob's worker group, and how many of them."""

    replicas: int
    workers_per_pod: int
    cpus: int
    memory_mib: int
    gpus: int
    custom_resources: Mapping[str, float] = field(default_factory=dict)


def worker_pod_spec(scaling: ScalingConfig) -> WorkerPodSpec:
    """Pods that hold the job's bundles: num_workers / workers_per_node pods of workers_per_node workers."""
    per_pod = scaling.workers_per_node or 1
    bundle = {name: amount * per_pod for name, amount in worker_resources(scaling).items()}
    budget_gb = scaling.memory_per_worker_gb or max(2.0, DEFAULT_WORKER_MEMORY_GB_PER_CPU * scaling.cpus_per_worker)
    return WorkerPodSpec(
        replicas=scaling.num_workers // per_pod,
        workers_per_pod=per_pod,
        cpus=_whole(bundle["CPU"]) + POD_CPU_HEADROOM,
        memory_mib=_whole((per_pod * budget_gb + POD_MEMORY_HEADROOM_GB) * 1024),
        gpus=_whole(bundle.get("GPU", 0.0)),
        custom_resources={name: amount for name, amount in bundle.items() if name not in ("CPU", "GPU", "memory")},
    )


def _whole(amount: float) -> int:
    # round first: 0.7 * 10 is 7.000000000000001 in floating point, which must stay 7
    return math.ceil(round(amount, 6))


def max_restarts(job: JobConfig) -> int:
    """The job's in-cluster restart budget (failure.max_restarts)."""
    return job.failure.max_restarts


def backoff_limit(restart_budget: int) -> int:
    """RayJob retries: 0 when restarts are off (fail fast, as asked), else 1 for a lost head pod.

    Our own restarts (failure.max_restarts) recover failed workers inside the running cluster, from
    the last checkpoint, in the same MLflow run. A RayJob retry is much heavier: KubeRay deletes the
    cluster and provisions a new one, and the job starts over in a new run. It is only worth it for
    what our restarts cannot survive, losing the head (the driver) itself; a job that used up its
    restart budget most likely fails the same way again, so it gets no more than one retry.
    """
    return 0 if restart_budget == 0 else 1


def mlflow_uri(namespace: str) -> str:
    """The in-cluster address of the MLflow Service of k8s/base in `namespace`."""
    return f"http://{MLFLOW_SERVICE}.{namespace}.svc.cluster.local:{MLFLOW_PORT}"


def override_key(override: str) -> str:
    """The config key a Hydra override sets: `+a.b=1`, `++a.b=1`, `~a.b` and `a.b=1` all set `a.b`."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key.split("@", 1)[0]


def train_overrides(overrides: Sequence[str], namespace: str) -> list[str]:
    """The user's overrides plus what a job inside the RayJob needs, unless the user set it."""
    given = {override_key(override) for override in overrides}
    added = [
        ("cluster.address", "auto"),  # the cluster the RayJob created; null would start an embedded one
        ("tracking.uri", mlflow_uri(namespace)),
        ("checkpoint.dir", CHECKPOINT_MOUNT),
    ]
    return [*overrides, *(f"{key}={value}" for key, value in added if key not in given)]


def without_runtime_env(overrides: Sequence[str]) -> list[str]:
    """The overrides minus those of cluster.runtime_env, which travels as the Ray job's own runtime env.

    The driver's actors inherit the job's runtime env, so the command line need not repeat it, and a
    secret in it then appears in no command line (the dashboard shows every job's entrypoint).
    """
    return [override for override in overrides if not (override_key(override) + ".").startswith(RUNTIME_ENV_KEY + ".")]


def entrypoint(overrides: Sequence[str], namespace: str) -> str:
    """`orchestrator train ...` as one shell command line, every override quoted for the shell."""
    return shlex.join(["orchestrator", "train", *train_overrides(without_runtime_env(overrides), namespace)])


def secret_env_names(job: JobConfig, redactor: Redactor) -> list[str]:
    """The runtime env's variables that hold secrets (by name or by value): a RayJob takes them from a Secret."""
    env_vars = job.cluster.runtime_env.get("env_vars") or {}
    return sorted(
        name for name, value in env_vars.items() if is_secret_key(str(name)) or redactor.is_secret(str(value))
    )


def _public_runtime_env(job: JobConfig, secret_names: Sequence[str]) -> dict[str, Any]:
    runtime_env = dict(job.cluster.runtime_env)
    if runtime_env.get("env_vars"):  # a RayJob's runtimeEnvYAML reaches Ray, which takes text only
        runtime_env["env_vars"] = {str(name): str(value) for name, value in runtime_env["env_vars"].items()}
    if secret_names:
        kept = {name: value for name, value in runtime_env["env_vars"].items() if name not in secret_names}
        if kept:
            runtime_env["env_vars"] = kept
        else:
            del runtime_env["env_vars"]
    return runtime_env


def _secret_problems(overrides: Sequence[str], runtime_env: Mapping[str, Any], redactor: Redactor) -> list[str]:
    """Secrets a manifest would carry in plain text, where no Secret can stand in for them."""
    problems = [
        f"{redactor.value(override)} is not valid for orchestrator k8s: a RayJob manifest is plain text and "
        f"this override carries a secret; pass it as an environment variable "
        f"('+cluster.runtime_env.env_vars={{NAME:...}}', which the pods then read from a Kubernetes Secret) "
        f"and read it from the environment in your code"
        for override in without_runtime_env(overrides)
        if redactor.is_secret(override)
    ]
    text = yaml.safe_dump(dict(runtime_env), sort_keys=True) if runtime_env else ""
    if redactor.text(text) != text:
        problems.append(
            f"{RUNTIME_ENV_KEY}={redactor.text(json.dumps(dict(runtime_env)))} is not valid for "
            f"orchestrator k8s: a field other than env_vars holds a secret (a pip index URL with a "
            f"password, say); move it into an environment variable (PIP_INDEX_URL), which the pods then "
            f"read from a Kubernetes Secret"
        )
    return problems


def check_request(job: JobConfig, overrides: Sequence[str], target: RayJobTarget) -> None:
    """Reject what cannot become a working RayJob (raises ConfigError naming flag or key and value)."""
    problems = []
    if not (_DNS_1035.match(target.name) and len(target.name) <= RAYJOB_NAME_MAX):
        problems.append(
            f"--name={target.name} is not valid: use at most {RAYJOB_NAME_MAX} lower-case letters, "
            "digits and '-', starting with a letter and ending with a letter or digit"
        )
    if not (_DNS_1123.match(target.namespace) and len(target.namespace) <= 63):
        problems.append(
            f"--namespace={target.namespace} is not valid: use at most 63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        )
    if not (_DNS_1123.match(target.secret) and len(target.secret) <= 253):
        problems.append(
            f"--secret={target.secret} is not valid: use a Secret name of lower-case letters, digits "
            "and '-', starting and ending with a letter or digit"
        )
    if not target.image or any(character.isspace() for character in target.image):
        problems.append(
            f"--image={target.image!r} is not valid: give an image reference such as "
            "registry.example.com/ml/orchestrator:0.1.0"
        )
    if "cluster.address" in {override_key(override) for override in overrides}:
        problems.append(
            f"cluster.address={job.cluster.address} is not valid for orchestrator k8s: the job runs on "
            "the RayJob's own cluster (cluster.address=auto is set for you); remove the override"
        )
    if problems:
        raise ConfigError(problems)


def render_rayjob(job: JobConfig, overrides: Sequence[str], target: RayJobTarget) -> dict[str, Any]:
    """The RayJob for this validated job: `kubectl apply -f -` of its YAML runs the job once.

    It holds no secret: the runtime env's secret variables (by name or value, see redact.py) become
    environment variables of the pods read from the Kubernetes Secret `target.secret`, and a secret
    anywhere else is refused (ConfigError), since a manifest is plain text.
    """
    check_request(job, overrides, target)
    redactor = redactor_for(job, overrides, environ={})
    secret_names = secret_env_names(job, redactor)
    runtime_env = _public_runtime_env(job, secret_names)
    problems = _secret_problems(overrides, runtime_env, redactor)
    if problems:
        raise ConfigError(problems)
    spec: dict[str, Any] = {
        "entrypoint": entrypoint(overrides, target.namespace),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
        "backoffLimit": backoff_limit(max_restarts(job)),
    }
    if runtime_env:
        spec["runtimeEnvYAML"] = yaml.safe_dump(runtime_env, sort_keys=True)
    spec["rayClusterSpec"] = ray_cluster_spec(job.scaling, target, secret_names)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": target.name, "namespace": target.namespace, "labels": _labels("ray-job")},
        "spec": spec,
    }


def ray_cluster_spec(scaling: ScalingConfig, target: RayJobTarget, secret_env: Sequence[str] = ()) -> dict[str, Any]:
    """Head (drivers only, no workers) and one worker group sized by worker_pod_spec().

    `secret_env`: variables every pod reads from the Secret `target.secret` (Ray's processes inherit them).
    """
    pods = worker_pod_spec(scaling)
    # the driver on the head receives the trained weights, as much memory as a worker holds; a GPU
    # job's larger cluster gets a second CPU for GCS and the dashboard
    head_memory_mib = 1024 * max(HEAD_MIN_MEMORY_GB, _whole(scaling.memory_per_worker_gb or 0))
    head = _container(
        "ray-head", target, {"cpu": "2" if pods.gpus else "1", "memory": _mebibytes(head_memory_mib)}, secret_env
    )
    head["ports"] = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
    ]
    return {
        "rayVersion": RAY_VERSION,
        "authOptions": {"mode": "token"},
        # num-cpus 0: the head runs the driver, GCS and dashboard; no training worker lands on it
        "headGroupSpec": {"rayStartParams": {"num-cpus": "0"}, "template": _pod_template("ray-head", head)},
        "workerGroupSpecs": [worker_group(pods, target, secret_env)],
    }


def worker_group(pods: WorkerPodSpec, target: RayJobTarget, secret_env: Sequence[str] = ()) -> dict[str, Any]:
    """The worker group: Ray's CPUs, memory and GPUs come from the container limits (never set twice)."""
    limits = {"cpu": str(pods.cpus), "memory": _mebibytes(pods.memory_mib)}
    if pods.gpus:
        limits["nvidia.com/gpu"] = str(pods.gpus)
    container = _container("ray-worker", target, limits, secret_env)
    template = _pod_template("ray-worker", container)
    if pods.gpus:
        _add_gpu_node_settings(template["spec"], container, pods.memory_mib)
    start_params = {}
    if pods.custom_resources:
        # KubeRay puts the value into the `ray start` shell command as it is: a quoted JSON string
        start_params["resources"] = shlex.quote(json.dumps(dict(sorted(pods.custom_resources.items()))))
    return {
        "groupName": "workers",
        "replicas": pods.replicas,
        "minReplicas": pods.replicas,
        "maxReplicas": pods.replicas,
        "rayStartParams": start_params,
        "template": template,
    }


def _add_gpu_node_settings(pod_spec: dict[str, Any], container: dict[str, Any], memory_mib: int) -> None:
    pod_spec["nodeSelector"] = dict(GPU_NODE_SELECTOR)
    pod_spec["tolerations"] = [dict(toleration) for toleration in GPU_TOLERATIONS]
    # NCCL moves data between the pod's processes through /dev/shm (64 MiB by default in a container);
    # tmpfs pages count against the pod's memory limit, so that limit bounds it as well
    pod_spec["volumes"].append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": _mebibytes(memory_mib)}})
    container["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})


def _container(
    name: str, target: RayJobTarget, limits: Mapping[str, str], secret_env: Sequence[str] = ()
) -> dict[str, Any]:
    secrets = [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": target.secret, "key": variable}}}
        for variable in secret_env
    ]
    return {
        "name": name,
        "image": target.image,
        "env": [{"name": "MLFLOW_TRACKING_URI", "value": mlflow_uri(target.namespace)}, *secrets],
        # requests = limits: Guaranteed QoS, and Ray's view of the pod is what Kubernetes reserved
        "resources": {"requests": dict(limits), "limits": dict(limits)},
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "checkpoints", "mountPath": CHECKPOINT_MOUNT}],
    }


def _pod_template(component: str, container: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"labels": _labels(component)},
        "spec": {
            # the image's `ray` user (uid 1000, gid 100); fsGroup makes the checkpoint volume writable
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 1000,
                "runAsGroup": 100,
                "fsGroup": 100,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
            "volumes": [{"name": "checkpoints", "persistentVolumeClaim": {"claimName": CHECKPOINT_CLAIM}}],
        },
    }


def _labels(component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "orchestrator",
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "orchestrator",
    }


def _mebibytes(mib: int) -> str:
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def to_yaml(document: Mapping[str, Any]) -> str:
    """The manifest as YAML for `kubectl apply -f -`: keys in the order written, long lines kept whole."""
    return yaml.safe_dump(dict(document), sort_keys=False, width=1_000_000, allow_unicode=True)


def default_name(timestamp: str, suffix: str) -> str:
    """A fresh RayJob name per submission: a `YYYYMMDD-HHMMSS` timestamp (the CLI passes UTC now) and a
    random suffix, so that two commands in the same second never name, and so replace, the same RayJob."""
    return f"orchestrator-{timestamp}-{suffix}"
