"""Pure registry rules: model references, names and aliases, the promotion choice, the version tags."""

from __future__ import annotations

import hashlib

import pytest

from orchestrator.config.problems import Problems
from orchestrator.config.schema import TrackingConfig
from orchestrator.registry.errors import RegistryError
from orchestrator.registry.model_ref import ModelRef, parse_model_ref
from orchestrator.registry.promotion import VersionMetrics, choose_version
from orchestrator.registry.version_tags import CONFIG_TAG, RUN_TAG, tag_metrics, version_tags

RUN = "0123456789abcdef0123456789abcdef"


def test_model_references_parse_into_a_run_an_alias_or_a_version():
    assert parse_model_ref(RUN) == ModelRef(run_id=RUN)
    assert parse_model_ref("models:/digits-cnn@champion") == ModelRef(name="digits-cnn", alias="champion")
    assert parse_model_ref("models:/digits-cnn/3") == ModelRef(name="digits-cnn", version=3)
    assert parse_model_ref("models:/digits-cnn/3").file_stem(None) == "digits-cnn-v3"
    assert parse_model_ref("models:/a b@x").file_stem(7) == "a_b-v7"
    assert parse_model_ref(RUN).file_stem(None) == "run-01234567"


@pytest.mark.parametrize("text", ["runs:/abc/model", "models:/x", "models:/x/0", "models:/x/v1", "abc", "models:/@a"])
def test_an_unknown_reference_names_the_valid_forms(text):
    with pytest.raises(
        RegistryError, match=r"use RUN_ID \(32 hex digits\), models:/NAME@ALIAS or models:/NAME/VERSION"
    ):
        parse_model_ref(text)


def test_latest_is_refused_with_a_reason():
    with pytest.raises(RegistryError, match="latest is ambiguous"):
        parse_model_ref("models:/x/latest")


def _problems(**values) -> list[str]:
    found = Problems()
    TrackingConfig(**values).check(found)
    return found.messages


def test_register_keys_are_validated_next_to_the_schema_naming_the_value_and_what_is_valid():
    assert _problems(register_as="digits-cnn", register_alias="candidate") == []
    assert _problems(register_as="team/model") == [
        "tracking.register_as=team/model is not valid: must not contain '/'; e.g. digits-cnn"
    ]
    assert _problems(register_as="m", register_alias="latest") == [
        "tracking.register_alias=latest is not valid: `latest` and v<number> are reserved by MLflow for versions; "
        "use e.g. candidate or champion"
    ]
    assert "use letters, digits, underscores and dashes only" in _problems(register_as="m", register_alias="a.b")[0]
    assert _problems(register_alias="candidate") == [
        "tracking.register_alias=candidate is not valid: an alias belongs to a registered model: set "
        "tracking.register_as=NAME too"
    ]
    assert "set tracking.log_model=true" in _problems(register_as="m", log_model=False)[0]


VERSIONS = [
    VersionMetrics(1, "r1", {"eval/accuracy": 0.91, "eval/loss": 0.30}),
    VersionMetrics(2, "r2", {"eval/accuracy": 0.95, "eval/loss": 0.35}),
    VersionMetrics(3, "r3", {"eval/accuracy": 0.93, "eval/loss": 0.20}),
]


def test_the_best_version_is_chosen_in_the_metrics_direction():
    higher = choose_version("m", "champion", VERSIONS, "eval/accuracy", "max", previous_version=1)
    assert higher.chosen.version == 2 and higher.changes
    assert higher.describe() == ("m@champion: version 1 (eval/accuracy 0.9100) -> version 2 (eval/accuracy 0.9500)")
    lower = choose_version("m", "champion", VERSIONS, "eval/loss", "min")
    assert lower.chosen.version == 3
    assert lower.describe() == "m@champion: (unset) -> version 3 (eval/loss 0.2000)"


def test_ties_go_to_the_newest_version_and_an_alias_in_place_is_unchanged():
    tied = [VersionMetrics(1, None, {"eval/accuracy": 0.9}), VersionMetrics(2, None, {"eval/accuracy": 0.9})]
    decision = choose_version("m", "champion", tied, "eval/accuracy", "max", previous_version=2)
    assert decision.chosen.version == 2 and not decision.changes
    assert decision.describe() == "m@champion: unchanged, already version 2 (eval/accuracy 0.9000)"


def test_a_version_without_the_metric_is_refused_naming_it_and_the_metrics_there_are():
    versions = [*VERSIONS, VersionMetrics(4, "r4", {"eval/perplexity": 3.0})]
    with pytest.raises(RegistryError) as raised:
        choose_version("m", "champion", versions, "eval/accuracy", "max")
    assert str(raised.value) == (
        "--metric 'eval/accuracy': version 4 of 'm' has no value for it, so the best cannot be chosen; metrics "
        "the versions have: eval/accuracy, eval/loss, eval/perplexity; pass --metric NAME, or --version V"
    )


def test_a_requested_version_wins_and_an_unknown_one_lists_the_versions():
    assert choose_version("m", "a", VERSIONS, "eval/accuracy", "max", requested=1).chosen.version == 1
    with pytest.raises(RegistryError, match="--version 9: 'm' has no such version; its versions: 1, 2, 3"):
        choose_version("m", "a", VERSIONS, "eval/accuracy", "max", requested=9)
    with pytest.raises(RegistryError, match="has no versions"):
        choose_version("m", "a", [], "eval/accuracy", "max")


def test_version_tags_hold_the_run_the_eval_metrics_and_the_configs_digest():
    tags = version_tags(RUN, {"eval/accuracy": 0.5, "train/loss": 1.0, "eval/loss": float("nan")}, "a: 1\n")
    assert tags == {
        RUN_TAG: RUN,
        "eval/accuracy": "0.5",
        CONFIG_TAG: hashlib.sha256(b"a: 1\n").hexdigest(),
    }
    assert tag_metrics({**tags, "eval/bad": "x"}) == {"eval/accuracy": 0.5}
