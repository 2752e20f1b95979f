"""The resolved config as YAML and as flat MLflow params."""

from __future__ import annotations

import yaml

from tests.helpers import compose_job


def test_flat_params_cover_every_key_with_string_values(tmp_path):
    job = compose_job(["model=mlp"], tmp_path)
    from orchestrator.config.export import flat_params

    params = flat_params(job)
    assert params["scaling.num_workers"] == "2"
    assert params["model.hidden_sizes"] == "[128, 128]"
    assert params["trainer.max_steps"] == "null"
    assert params["model.name"] == "mlp"
    assert all(isinstance(value, str) for value in params.values())


def test_yaml_round_trips_to_the_same_values(tmp_path):
    from orchestrator.config.export import config_dict, config_yaml

    job = compose_job(["optim.lr=0.25"], tmp_path)
    assert yaml.safe_load(config_yaml(job)) == config_dict(job)
