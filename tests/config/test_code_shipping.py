"""Which folders the ranks get on PYTHONPATH for the user's own modules, and the `_target_` shortcut."""

from __future__ import annotations

import os

import pytest

from orchestrator.config.code_shipping import import_root, worker_runtime_env
from orchestrator.config.compose import with_target_options
from orchestrator.errors import ConfigError
from tests.helpers import compose_job
from tests.own_code import own_overrides, user_package


def test_the_users_folder_goes_to_the_ranks_and_installed_libraries_do_not(tmp_path, monkeypatch):
    folder = user_package(tmp_path / "user")
    (folder / "single.py").write_text("from torch import nn\nNet = nn.Linear\n")
    monkeypatch.syspath_prepend(str(folder))
    assert import_root("digitpng") == import_root("single") == str(folder.resolve())
    assert import_root("torch") is None and import_root("json") is None and import_root("no_such_mod") is None

    job = compose_job([*own_overrides(folder), "+cluster.runtime_env.env_vars={NCCL_DEBUG:INFO}"], tmp_path)
    env = worker_runtime_env(job, environ={"PYTHONPATH": "/opt/lib"})
    assert env["env_vars"] == {"NCCL_DEBUG": "INFO", "PYTHONPATH": os.pathsep.join(["/opt/lib", str(folder.resolve())])}
    assert worker_runtime_env(compose_job(["model=mlp"], tmp_path)) == {}
    # a step function from a folder of its own reaches the ranks too
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "mysteps.py").write_text("def step(model, batch):\n    return model(batch).mean()\n")
    monkeypatch.syspath_prepend(str(steps))
    job = compose_job([*own_overrides(folder), "trainer.step_fn=mysteps.step"], tmp_path)
    assert worker_runtime_env(job, environ={})["env_vars"]["PYTHONPATH"] == os.pathsep.join(
        [str(folder.resolve()), str(steps.resolve())]
    )


def test_setting_a_target_alone_picks_the_groups_target_option():
    assert with_target_options(["-m", "model._target_=a.B", "+model.width=3", "optim.lr=1,2"]) == [
        "-m",
        "model=target",
        "model._target_=a.B",
        "+model.width=3",
        "optim.lr=1,2",
    ]
    assert with_target_options(["model=mynet", "model._target_=a.B"]) == ["model=mynet", "model._target_=a.B"]
    assert with_target_options(["data._target_=a.b", "model=mlp"]) == ["data=target", "data._target_=a.b", "model=mlp"]


def test_environment_variables_reach_ray_as_text_and_values_that_would_change_are_refused(tmp_path):
    job = compose_job(["+cluster.runtime_env.env_vars={OMP_NUM_THREADS:1,NCCL_DEBUG:INFO}"], tmp_path)
    assert worker_runtime_env(job)["env_vars"] == {"OMP_NUM_THREADS": "1", "NCCL_DEBUG": "INFO"}
    with pytest.raises(ConfigError) as raised:
        compose_job(["+cluster.runtime_env.env_vars={LR:1e-3,DEBUG:true,OK:'1e-3'}"], tmp_path)
    text = str(raised.value)
    assert "cluster.runtime_env.env_vars.LR=0.001 is not valid: a variable's value is text" in text
    assert "'+cluster.runtime_env.env_vars.LR=\"0.001\"'" in text
    assert "cluster.runtime_env.env_vars.DEBUG=True is not valid" in text
    assert 'env_vars.DEBUG="true"' in text
    assert ".OK=" not in text
