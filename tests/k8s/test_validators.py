"""The validators catch what they must: unknown fields, wrong types, missing required fields and
unquoted rayStartParams numbers, in core resources and in ray.io resources alike."""

from __future__ import annotations

import copy

import pytest
import yaml

from orchestrator.kubernetes import rayjob as manifests
from tests.helpers import compose_job
from tests.k8s.validators import REPO, core_errors, crd_errors, errors, ray_start_params_set_twice, strict_schema


@pytest.fixture(scope="module")
def deployment() -> dict:
    documents = yaml.safe_load_all((REPO / "k8s" / "base" / "mlflow.yaml").read_text())
    return next(document for document in documents if document["kind"] == "Deployment")


@pytest.fixture(scope="module")
def rayjob(tmp_path_factory) -> dict:
    job = compose_job([], tmp_path_factory.mktemp("job"))
    return manifests.render_rayjob(job, [], manifests.RayJobTarget(name="negative"))


def _changed(document: dict, change) -> dict:
    changed = copy.deepcopy(document)
    change(changed)
    return changed


def _pod(document: dict) -> dict:
    return document["spec"]["template"]["spec"]


def _worker(rayjob_document: dict) -> dict:
    return rayjob_document["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


def test_the_unchanged_core_document_is_valid(deployment):
    assert core_errors(deployment) == []


def test_the_unchanged_ray_document_is_valid(rayjob):
    assert crd_errors(rayjob) == []


def test_core_unknown_field_fails_strict_validation_only(deployment):
    typo = _changed(deployment, lambda d: _pod(d)["containers"][0].update(resource={"limits": {"cpu": "1"}}))
    assert core_errors(typo, strict=False) == []  # the lax schema lets it through: strict mode matters
    assert "'resource' was unexpected" in " ".join(core_errors(typo))


def test_core_wrong_type_fails(deployment):
    assert "is not of type 'integer'" in " ".join(
        core_errors(_changed(deployment, lambda d: d["spec"].update(replicas="1")))
    )


def test_core_missing_required_field_fails(deployment):
    nameless = _changed(deployment, lambda d: _pod(d)["containers"][0].pop("name"))
    assert "'name' is a required property" in " ".join(core_errors(nameless))


def test_ray_unknown_field_fails_at_any_depth(rayjob):
    top = _changed(rayjob, lambda d: d["spec"].update(shutdownAfterJobFinish=True))
    assert "'shutdownAfterJobFinish' was unexpected" in " ".join(crd_errors(top))
    deep = _changed(rayjob, lambda d: _worker(d)["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"))
    assert "'imagePullPolicyy' was unexpected" in " ".join(crd_errors(deep))


def test_ray_wrong_type_fails(rayjob):
    assert "'1' is not of type 'integer'" in " ".join(
        crd_errors(_changed(rayjob, lambda d: d["spec"].update(backoffLimit="1")))
    )
    assert "is not of type 'integer'" in " ".join(
        crd_errors(_changed(rayjob, lambda d: _worker(d).update(replicas="2")))
    )


def test_ray_missing_required_field_fails(rayjob):
    headless = _changed(rayjob, lambda d: d["spec"]["rayClusterSpec"].pop("headGroupSpec"))
    assert "'headGroupSpec' is a required property" in " ".join(crd_errors(headless))
    unnamed = _changed(rayjob, lambda d: _worker(d).pop("groupName"))
    assert "'groupName' is a required property" in " ".join(crd_errors(unnamed))


def test_required_fields_with_a_default_are_optional(rayjob):
    # minReplicas and maxReplicas are required in the CRD but defaulted by the API server
    defaulted = _changed(rayjob, lambda d: [_worker(d).pop(key) for key in ("minReplicas", "maxReplicas")])
    assert crd_errors(defaulted) == []
    schema = strict_schema(
        {
            "type": "object",
            "required": ["a", "b"],
            "properties": {"a": {"type": "integer", "default": 1}, "b": {"type": "integer"}},
        }
    )
    assert schema["required"] == ["b"] and schema["additionalProperties"] is False


def test_unquoted_ray_start_params_number_fails(rayjob):
    text = manifests.to_yaml(rayjob).replace("num-cpus: '0'", "num-cpus: 0")
    assert "num-cpus: 0\n" in text
    assert "0 is not of type 'string'" in " ".join(crd_errors(yaml.safe_load(text)))


def test_a_resource_set_both_in_limits_and_ray_start_params_is_caught(rayjob):
    def add_gpus_twice(document):
        _worker(document)["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = "1"
        _worker(document)["rayStartParams"]["num-gpus"] = "1"

    assert ray_start_params_set_twice(_changed(rayjob, add_gpus_twice)) == [
        "workers: nvidia.com/gpu in limits and num-gpus in rayStartParams"
    ]
    assert ray_start_params_set_twice(rayjob) == []


def test_errors_picks_the_validator_by_api_group(deployment, rayjob):
    assert errors(_changed(rayjob, lambda d: d["spec"].update(backoffLimit="1"))) != []
    assert errors(_changed(deployment, lambda d: d["spec"].update(replicas="1"))) != []
    assert errors({"apiVersion": "ray.io/v1", "kind": "RayService"}) == ["no CRD schema for ray.io/v1 RayService"]
