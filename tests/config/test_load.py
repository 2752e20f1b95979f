"""Config composition and validation: defaults, overrides, and every rejected value's message."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config.schema import CnnConfig, DigitsConfig, MlpConfig, SyntheticConfig
from orchestrator.errors import ConfigError
from tests.helpers import compose_job


def test_default_job_is_a_cnn_on_digits_with_two_gloo_workers(tmp_path: Path):
    job = compose_job([], tmp_path)
    assert isinstance(job.model, CnnConfig) and isinstance(job.data, DigitsConfig)
    assert job.scaling.num_workers == 2 and job.scaling.backend == "auto" and job.cluster.address is None
    assert job.tracking.uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert job.checkpoint.dir == str(tmp_path.resolve() / "checkpoints")


def test_group_options_and_overrides_build_the_typed_config(tmp_path: Path):
    job = compose_job(
        [
            "model=mlp",
            "data=synthetic",
            "model.hidden_sizes=[8,4]",
            "data.input_shape=[12]",
            "optim.lr=0.5",
            "trainer.max_steps=7",
        ],
        tmp_path,
    )
    assert isinstance(job.model, MlpConfig) and job.model.hidden_sizes == [8, 4]
    assert isinstance(job.data, SyntheticConfig) and job.data.input_shape == [12]
    assert job.optim.lr == 0.5 and job.trainer.max_steps == 7


def test_absolute_sqlite_uri_is_kept(tmp_path: Path):
    job = compose_job(["tracking.uri=sqlite:////data/runs.db"], tmp_path)
    assert job.tracking.uri == "sqlite:////data/runs.db"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("scaling.num_workers=0", "scaling.num_workers=0 is not valid: must be a number >= 1"),
        ("data.batch_size=0", "data.batch_size=0 is not valid: must be a number >= 1"),
        ("data.batch_size=-4", "data.batch_size=-4 is not valid: must be a number >= 1"),
        ("trainer.amp=fp8", "trainer.amp=fp8 is not valid: use one of none, bf16, fp16"),
        ("optim.lr=-1", "optim.lr=-1.0 is not valid: must be a number > 0"),
        ("trainer.grad_accum_steps=0", "trainer.grad_accum_steps=0 is not valid: must be a number >= 1"),
        ("scaling.placement_strategy=RANDOM", "use one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD"),
        ("scaling.backend=mpi", "scaling.backend=mpi is not valid: use one of auto, nccl, gloo"),
        ("scaling.backend=nccl", "nccl needs GPUs"),
        ("scaling.strategy=zero3", "scaling.strategy=zero3 is not valid: use one of ddp, fsdp"),
        ("fsdp.wrap=[Block]", "fsdp.wrap=['Block'] is not valid: names module classes as package.module.Class"),
        ("optim.name=lion", "optim.name=lion is not valid: use one of sgd, adamw"),
        ("optim.schedule=step", "use one of constant, cosine"),
        ("data.test_fraction=1.0", "data.test_fraction=1.0 is not valid: must be in (0, 1)"),
        ("scaling.gpus_per_worker=1.5", "must be 0, a fraction in (0, 1] or a whole number"),
        ("checkpoint.keep_last=0", "checkpoint.keep_last=0 is not valid"),
        ("trainer.max_steps=0", "trainer.max_steps=0 is not valid"),
        (
            "sweep.objective=eval/acc",
            "sweep.objective=eval/acc is not valid: the built-in loop reports eval/accuracy, "
            "eval/loss, train/loss, train/samples_per_s",
        ),
        ("sweep.direction=up", "sweep.direction=up is not valid: use one of maximize, minimize"),
        ("sweep.early_stop=pbt", "sweep.early_stop=pbt is not valid: use one of none, median, asha, hyperband"),
        ("sweep.resume=true", "sweep.resume=True is not valid: resuming needs the study's database: set sweep.storage"),
        ("sweep.early_stop_min_trials=0", "sweep.early_stop_min_trials=0 is not valid: must be a number >= 1"),
        (
            "trainer.compile_mode=fast",
            "trainer.compile_mode=fast is not valid: use one of default, reduce-overhead, max-autotune",
        ),
        ("trainer.peak_tflops=0", "trainer.peak_tflops=0.0 is not valid: must be a number > 0"),
        ("ddp.bucket_cap_mb=0", "ddp.bucket_cap_mb=0.0 is not valid: must be a number > 0"),
        ("model=gpt", "data=digits is not valid: model=gpt predicts tokens: set data=tokens"),
        ("data=tokens", "data=tokens is not valid: token sequences need model=gpt"),
    ],
)
def test_invalid_values_name_the_key_the_value_and_what_is_valid(tmp_path: Path, override: str, expected: str):
    with pytest.raises(ConfigError) as raised:
        compose_job([override], tmp_path)
    assert expected in str(raised.value)
    assert raised.value.exit_code == 2


def test_every_problem_is_reported_at_once(tmp_path: Path):
    with pytest.raises(ConfigError) as raised:
        compose_job(["scaling.num_workers=0", "trainer.amp=fp8", "optim.lr=-1"], tmp_path)
    assert len(raised.value.problems) == 3


def test_cnn_needs_image_shaped_inputs(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"model=cnn needs image inputs"):
        compose_job(["data=synthetic", "data.input_shape=[64]"], tmp_path)
    with pytest.raises(ConfigError, match=r"use at most 4 conv blocks"):
        compose_job(["model.channels=[4,4,4,4,4]"], tmp_path)


def test_an_unknown_group_option_names_the_valid_ones(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"model=transformer is not valid: use one of cnn, gpt, mlp, target$"):
        compose_job(["model=transformer"], tmp_path)


def test_wrong_type_and_unknown_key_are_rejected_by_the_schema(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"scaling.num_workers=two is not valid: must be an integer"):
        compose_job(["scaling.num_workers=two"], tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"scaling.num_worker=2 is not valid: scaling has no key num_worker \(did "
        r"you mean num_workers\?\)",
    ):
        compose_job(["scaling.num_worker=2"], tmp_path)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (
            ["scaling.num_workers=6", "scaling.workers_per_node=4"],
            "scaling.workers_per_node=4 is not valid: scaling.num_workers=6 must be a multiple of it",
        ),
        (
            ["scaling.num_workers=4", "scaling.workers_per_node=2", "scaling.placement_strategy=STRICT_PACK"],
            "scaling.placement_strategy=STRICT_PACK is not valid: with scaling.workers_per_node",
        ),
        (["scaling.memory_per_worker_gb=0"], "scaling.memory_per_worker_gb=0.0 is not valid: must be a number > 0"),
        (
            ["+scaling.resources_per_worker.GPU=1"],
            "scaling.resources_per_worker.GPU=1.0 is not valid: set GPU through scaling.gpus_per_worker",
        ),
        (
            ["+scaling.resources_per_worker.tpu=-1"],
            "scaling.resources_per_worker.tpu=-1.0 is not valid: must be a number > 0",
        ),
        (
            ["+scaling.nccl_env.BAD-NAME=1"],
            "scaling.nccl_env=BAD-NAME is not valid: keys must be environment variable names",
        ),
        (["entrypoint=notebook"], "entrypoint=notebook is not valid: use one of builtin, script"),
        (["entrypoint=script"], "script.path=null is not valid: entrypoint=script needs the script to run"),
        (["entrypoint=script", "script.path=missing.py"], "missing.py is not valid: no such file"),
        (
            ["entrypoint=script", f"script.path={__file__}", "script.console_ranks=[0,2,-1]"],
            "script.console_ranks=[0, 2, -1] is not valid: ranks are 0 to 1 (scaling.num_workers=2); not [2, -1]",
        ),
    ],
)
def test_multi_node_and_script_settings_are_validated(tmp_path: Path, overrides, expected):
    with pytest.raises(ConfigError) as raised:
        compose_job(overrides, tmp_path)
    assert expected in str(raised.value)


def test_per_node_shape_custom_resources_and_script(tmp_path: Path):
    (tmp_path / "train.py").write_text("print('hello')\n")
    job = compose_job(
        [
            "scaling.num_workers=8",
            "scaling.workers_per_node=4",
            "+scaling.resources_per_worker.fast=1",
            "+scaling.nccl_env.NCCL_DEBUG=INFO",
            "entrypoint=script",
            "script.path=train.py",
            "script.args=[--epochs,3]",
        ],
        tmp_path,
    )
    assert job.scaling.workers_per_node == 4 and job.scaling.resources_per_worker == {"fast": 1.0}
    assert job.scaling.nccl_env == {"NCCL_DEBUG": "INFO"}
    assert job.script.path == str(tmp_path.resolve() / "train.py") and job.script.args == ["--epochs", "3"]


def test_gpt_shape_rules_name_the_keys(tmp_path: Path):
    with pytest.raises(ConfigError) as raised:
        compose_job(
            ["model=gpt", "data=tokens", "model.width=30", "model.heads=4", "data.seq_len=200", "model.context=128"],
            tmp_path,
        )
    assert "model.width=30 is not valid: must be a multiple of model.heads=4" in str(raised.value)
    assert "data.seq_len=200 is not valid: must be at most model.context=128" in str(raised.value)


def test_script_argv_reaches_the_script_exactly_as_typed_where_script_args_items_go_through_hydra(tmp_path: Path):
    (tmp_path / "train.py").write_text("")
    script = ["entrypoint=script", "script.path=train.py"]
    job = compose_job(
        [*script, "script.argv=\"--lr 1e-3 --total-timesteps=16384 --flag null --name 'a b' 1_000 true\""], tmp_path
    )
    assert job.script.arguments() == [
        "--lr",
        "1e-3",
        "--total-timesteps=16384",
        "--flag",
        "null",
        "--name",
        "a b",
        "1_000",
        "true",
    ]
    # list items are values to Hydra: unquoted ones are converted, quoted ones are kept
    job = compose_job([*script, "script.args=[--lr,1e-3,--flag,true,--n,1_000]"], tmp_path)
    assert job.script.arguments() == ["--lr", "0.001", "--flag", "True", "--n", "1000"]
    job = compose_job([*script, "script.args=[--lr,'1e-3','--total-timesteps=16384','null',\"true\"]"], tmp_path)
    assert job.script.arguments() == ["--lr", "1e-3", "--total-timesteps=16384", "null", "true"]
    assert compose_job(script, tmp_path).script.arguments() == []


@pytest.mark.parametrize(
    "override, expected",
    [
        ("script.argv=1e-3", "script.argv=0.001 is not valid: Hydra read it as a number, a boolean or a list"),
        ("script.argv=true", "script.argv=True is not valid: Hydra read it as a number, a boolean or a list"),
        ("script.argv='--name \"a b'", "cannot be split into arguments as a shell would (No closing quotation)"),
        ("script.args=[--epochs,3]", "script.argv=--lr 1e-3 is not valid: script.args=['--epochs', '3'] is set too"),
    ],
)
def test_script_argv_must_be_a_command_line_given_instead_of_script_args(tmp_path: Path, override, expected):
    extra = ["script.argv='--lr 1e-3'"] if override.startswith("script.args") else []
    with pytest.raises(ConfigError) as raised:
        compose_job(["entrypoint=script", "script.path=missing.py", override, *extra], tmp_path)
    assert expected in str(raised.value)


def test_script_errors_are_not_retried_unless_asked(tmp_path: Path):
    assert compose_job([], tmp_path).failure.retry_script_errors is False
    assert compose_job(["failure.retry_script_errors=true"], tmp_path).failure.retry_script_errors is True


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["trainer.amp=fp16"], "trainer.amp=fp16 is not valid: with scaling.strategy=fsdp mixed precision is bf16"),
        (["fsdp.cpu_offload=true"], "fsdp.cpu_offload=true is not valid: moves parameters between CPU and GPU"),
        (["entrypoint=script", "script.path=setup.py"], "scaling.strategy=fsdp is not valid: applies to the built-in"),
    ],
)
def test_fsdp_combinations_that_cannot_work_are_refused(overrides, expected):
    from orchestrator.config.load import validate
    from tests.helpers import job_config

    with pytest.raises(ConfigError) as raised:
        validate(job_config(["scaling.strategy=fsdp", *overrides]))
    assert expected in str(raised.value)
