"""The rules between config sections, in one place, and `validate`, which applies them with every section's own.

A section's own rules (a number's range, a choice) are its dataclass's `check` in schema.py; what is
here needs two sections at once: a model and the data it is sized for, a script and the worker count,
a sweep's objective and what the entrypoint reports. Pure: no file is read but the script's path.
"""

from __future__ import annotations

from pathlib import Path

from orchestrator.config.problems import Problems, is_number, show
from orchestrator.config.schema import (
    ENTRYPOINTS,
    SWEEP_OBJECTIVES,
    CnnConfig,
    GptConfig,
    JobConfig,
    TargetDataConfig,
    TargetModelConfig,
    TokensConfig,
    data_input_shape,
)
from orchestrator.errors import ConfigError


def validate(job: JobConfig) -> None:
    """Reject every invalid value with the key, the value and what is valid (raises ConfigError).

    The order is the order of the messages: the entrypoint and its script, scaling, the training loop,
    the optimizer, the data, the model, tracking, checkpoints and failures, monitoring, the sweep.
    """
    found = Problems()
    found.choice("entrypoint", job.entrypoint, ENTRYPOINTS)
    job.script.check(found)
    script_rules(job, found)
    job.scaling.check(found)
    job.cluster.check(found)
    pool_rules(job, found)
    job.trainer.check(found)
    step_fn_rules(job, found)
    job.ddp.check(found)
    job.fsdp.check(found)
    strategy_rules(job, found)
    job.optim.check(found)
    job.data.check(found)
    model_rules(job, found)
    job.tracking.check(found)
    job.checkpoint.check(found)
    job.failure.check(found)
    job.trainer.check_resume(found)
    job.monitor.check(found)
    sweep_rules(job, found)
    job.sweep.check(found)
    if found.messages:
        raise ConfigError(found.messages)


def script_rules(job: JobConfig, found: Problems) -> None:
    """entrypoint=script needs a script that exists, and its console ranks must be ranks of the job."""
    if job.entrypoint != "script":
        return
    path = job.script.path
    if path is None:
        found.require(False, "script.path", path, "entrypoint=script needs the script to run: set script.path=train.py")
    elif not Path(path).is_file():
        found.require(False, "script.path", path, "no such file: give the path of a Python script")
    ranks = job.script.console_ranks
    if ranks is not None:
        workers = job.scaling.num_workers
        bad = [rank for rank in ranks if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < workers]
        found.require(
            not bad,
            "script.console_ranks",
            show(ranks),
            f"ranks are 0 to {workers - 1} (scaling.num_workers={workers}); not {show(bad)}",
        )


def step_fn_rules(job: JobConfig, found: Problems) -> None:
    """A step function of your own goes with data of your own."""
    if job.trainer.step_fn is not None:
        found.require(
            isinstance(job.data, TargetDataConfig),
            "trainer.step_fn",
            job.trainer.step_fn,
            "is for your own data set (data._target_); the built-in data sets use the built-in step",
        )


def strategy_rules(job: JobConfig, found: Problems) -> None:
    """scaling.strategy=fsdp is the built-in loop's, with bf16 (not fp16) mixed precision, and offloads to the
    CPU only from GPUs."""
    if job.scaling.strategy != "fsdp":
        return
    found.require(
        job.entrypoint == "builtin",
        "scaling.strategy",
        "fsdp",
        "applies to the built-in loop; a script (entrypoint=script) shards its own model with fully_shard: "
        "leave scaling.strategy=ddp",
    )
    found.require(
        job.trainer.amp != "fp16",
        "trainer.amp",
        "fp16",
        "with scaling.strategy=fsdp mixed precision is bf16 parameters with fp32 gradient reduction "
        "(FSDP2's MixedPrecisionPolicy): set trainer.amp=bf16 or none",
    )
    gpus = job.scaling.gpus_per_worker
    found.require(
        not job.fsdp.cpu_offload or (is_number(gpus) and gpus > 0),
        "fsdp.cpu_offload",
        "true",
        "moves parameters between CPU and GPU memory: it needs GPU workers (scaling.gpus_per_worker >= 1); "
        "CPU workers keep everything in CPU memory already",
    )


def model_rules(job: JobConfig, found: Problems) -> None:
    """The model's own keys, and whether it fits the data: your own model with your own data, gpt with
    tokens, a cnn with images its pools do not shrink to nothing."""
    model = job.model
    if isinstance(model, TargetModelConfig) or isinstance(job.data, TargetDataConfig):
        own_components_rules(job, found)
        return
    model.check(found)
    if isinstance(model, CnnConfig) and not isinstance(job.data, TokensConfig):  # tokens: reported below
        cnn_input_rules(job, model, found)
    elif isinstance(model, GptConfig):
        gpt_data_rules(job, model, found)
    if not isinstance(model, GptConfig) and isinstance(job.data, TokensConfig):
        found.require(
            False,
            "data",
            "tokens",
            f"token sequences need model=gpt (model={model.name} classifies tensors): set model=gpt, or data=synthetic",
        )


def own_components_rules(job: JobConfig, found: Problems) -> None:
    """Your own model needs your own data and the other way round (built-in models are sized by the
    built-in data sets); the callables themselves are checked where they can be imported (components)."""
    model, data = job.model, job.data
    if not isinstance(model, TargetModelConfig) and isinstance(data, TargetDataConfig):
        found.require(
            False,
            "model",
            model.name,
            f"data._target_={data.target} is your own data set: a built-in "
            "model is sized for a built-in data set; set model._target_ to your model",
        )
    if not isinstance(data, TargetDataConfig) and isinstance(model, TargetModelConfig):
        found.require(
            False,
            "data",
            data.name,
            f"model._target_={model.target} is your own model: give it your "
            "own data with data._target_, or pick a built-in model",
        )


def gpt_data_rules(job: JobConfig, model: GptConfig, found: Problems) -> None:
    """gpt predicts tokens: it needs data=tokens, with sequences no longer than its context."""
    data = job.data
    if not isinstance(data, TokensConfig):
        found.require(False, "data", data.name, "model=gpt predicts tokens: set data=tokens")
    elif is_number(data.seq_len) and is_number(model.context) and data.seq_len > model.context:
        found.require(False, "data.seq_len", data.seq_len, f"must be at most model.context={model.context}")


def cnn_input_rules(job: JobConfig, model: CnnConfig, found: Problems) -> None:
    """A cnn takes [channels, height, width] inputs that its 2x2 pools do not shrink to nothing."""
    shape = data_input_shape(job.data)
    if len(shape) != 3:
        found.require(
            False,
            "data.input_shape",
            list(shape),
            "model=cnn needs image inputs [channels, height, width]: set data.input_shape=[1,8,8] or use model=mlp",
        )
        return
    pools = max(len(model.channels) - 1, 0)
    smallest = min(shape[1], shape[2])
    if smallest >> pools < 1:
        found.require(
            False,
            "model.channels",
            model.channels,
            f"{pools} 2x2 pools shrink a {shape[1]}x{shape[2]} "
            f"input to nothing: use at most {smallest.bit_length()} conv blocks",
        )


def pool_rules(job: JobConfig, found: Problems) -> None:
    """A pool's workers are one per bundle, of a fixed number, started without the job's runtime environment."""
    if job.cluster.pool is None:
        return
    pool = f"with cluster.pool={job.cluster.pool}"
    found.require(
        job.scaling.workers_per_node is None,
        "scaling.workers_per_node",
        job.scaling.workers_per_node,
        f"{pool} the pool's bundles hold one worker each: leave it null",
    )
    found.require(
        job.failure.spare_workers == 0, "failure.spare_workers", job.failure.spare_workers, f"{pool} it must be 0"
    )
    found.require(
        job.scaling.min_workers is None, "scaling.min_workers", job.scaling.min_workers, f"{pool} it must be null"
    )
    found.require(
        set(job.cluster.runtime_env) <= {"env_vars"},
        "cluster.runtime_env",
        job.cluster.runtime_env,
        f"{pool} only env_vars (set on the pool's workers per job); the other keys take effect only when a "
        "worker starts",
    )


def sweep_rules(job: JobConfig, found: Problems) -> None:
    """The built-in loop can only optimize what it reports; a script's objective is any key it reports."""
    if job.entrypoint == "builtin":
        found.require(
            job.sweep.objective in SWEEP_OBJECTIVES,
            "sweep.objective",
            job.sweep.objective,
            f"the built-in loop reports {', '.join(SWEEP_OBJECTIVES)}",
        )
