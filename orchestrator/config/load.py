"""DictConfig -> JobConfig: the one place a Hydra DictConfig is read, and the job's validation."""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from orchestrator.config.schema import (
    AMP_MODES,
    BACKENDS,
    COMPILE_MODES,
    EARLY_STOP_RULES,
    ENTRYPOINTS,
    MODEL_FORMATS,
    OPTIMIZERS,
    PLACEMENT_STRATEGIES,
    RESTART_ON,
    SCHEDULES,
    SWEEP_DIRECTIONS,
    SWEEP_OBJECTIVES,
    CnnConfig,
    GptConfig,
    JobConfig,
    MlpConfig,
    ScalingConfig,
    ScriptConfig,
    SyntheticConfig,
    TargetConfig,
    TargetDataConfig,
    TargetModelConfig,
    TokensConfig,
    data_input_shape,
    data_num_classes,  # noqa: F401 (until the job runner imports it from the schema)
)
from orchestrator.errors import ConfigError
from orchestrator.redaction import redact_value

PER_NODE_STRATEGIES = ("PACK", "STRICT_SPREAD")
RESERVED_RESOURCES = {"CPU": "scaling.cpus_per_worker", "GPU": "scaling.gpus_per_worker",
                      "memory": "scaling.memory_per_worker_gb"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
"""Stores MLflow 3 records into (a driver suffix such as postgresql+psycopg2 is allowed)."""


def load_config(cfg: DictConfig, base_dir: Path) -> JobConfig:
    """Build the typed, validated job config; relative paths are taken from `base_dir`."""
    unknown = unknown_keys(cfg)
    if unknown:
        raise ConfigError(unknown)
    job = OmegaConf.to_object(cfg)
    if not isinstance(job, JobConfig):
        raise TypeError(f"expected a composed JobConfig, got {type(job).__name__}")
    job = _absolute_paths(typed_targets(job), base_dir)
    validate(job)
    return job


def unknown_keys(cfg: DictConfig) -> list[str]:
    """Keys added with `+` that the fixed schema does not have (Hydra accepts them; the frozen dataclasses
    would fail on them with a traceback): one problem each, naming the valid keys."""
    from orchestrator.config.hydra_errors import unknown_key_problem

    problems: list[str] = []
    _walk_unknown(cfg, JobConfig, "", problems, unknown_key_problem)
    return problems


def _walk_unknown(node: DictConfig, schema_type: Any, prefix: str, problems: list[str], describe) -> None:
    if not dataclasses.is_dataclass(schema_type):
        return  # a free-form node (runtime_env, the user's own model keys)
    fields = {field.name: field for field in dataclasses.fields(schema_type)}
    for key in node.keys():
        path = f"{prefix}{key!s}"
        if key not in fields:
            problems.append(describe(path, f"+{path}", getattr(schema_type, "__name__", None)))
            continue
        child = node._get_node(key)
        child_type = OmegaConf.get_type(child) if isinstance(child, DictConfig) else None
        if isinstance(child, DictConfig) and child_type is not None and dataclasses.is_dataclass(child_type):
            _walk_unknown(child, child_type, f"{path}.", problems, describe)


def _absolute_paths(job: JobConfig, base_dir: Path) -> JobConfig:
    """Pin relative locations to `base_dir`, so workers and the printed commands agree on them."""
    tracking = job.tracking
    sqlite_prefix = "sqlite:///"
    if tracking.uri.startswith(sqlite_prefix) and not tracking.uri.startswith(sqlite_prefix + "/"):
        # sqlite:///name.db is relative to the working directory; sqlite:////abs/name.db is absolute
        db_path = (base_dir / tracking.uri[len(sqlite_prefix):]).resolve()
        tracking = dataclasses.replace(tracking, uri=f"{sqlite_prefix}{db_path}")
    checkpoint = dataclasses.replace(job.checkpoint, dir=str((base_dir / job.checkpoint.dir).resolve()))
    script = job.script
    if script.path is not None:
        script = dataclasses.replace(script, path=str((base_dir / script.path).resolve()))
    if script.log_dir is not None:
        script = dataclasses.replace(script, log_dir=str((base_dir / script.log_dir).resolve()))
    return dataclasses.replace(job, tracking=tracking, checkpoint=checkpoint, script=script)


TARGET_KEY = "_target_"
LOADER_KEYS = ("batch_size", "num_workers")
"""Keys of a data node that stay the loop's DataLoader settings instead of going to the user's callable."""


def typed_targets(job: JobConfig) -> JobConfig:
    """The job with its `_target_` nodes (the user's model, data and loss) typed.

    A model or data node composed from a YAML file without a schema (the user's own, or
    conf/*/target.yaml) reaches here as a plain dict; its keys become the callable's keyword arguments.
    """
    problems: list[str] = []
    model, data, loss = job.model, job.data, job.loss
    if isinstance(model, dict):
        target = _target_of("model", model, problems)
        model = TargetModelConfig(target=target, kwargs={k: v for k, v in model.items() if k != TARGET_KEY})
    if isinstance(data, dict):
        target = _target_of("data", data, problems)
        kwargs = {k: v for k, v in data.items() if k != TARGET_KEY and k not in LOADER_KEYS}
        loader = {k: data[k] for k in LOADER_KEYS if k in data}
        data = TargetDataConfig(target=target, kwargs=kwargs, **loader)
    if isinstance(loss, dict):
        loss_target = loss.get(TARGET_KEY)
        rest = {k: v for k, v in loss.items() if k != TARGET_KEY}
        if loss_target is None and rest:
            key = next(iter(rest))
            problems.append(f"loss.{key}={_show(rest[key])} is not valid without loss._target_: name the loss "
                            "callable, e.g. loss._target_=torch.nn.CrossEntropyLoss")
        loss = None if loss_target is None else TargetConfig(target=str(loss_target), kwargs=rest)
    if problems:
        raise ConfigError(problems)
    return dataclasses.replace(job, model=model, data=data, loss=loss)


def _target_of(group: str, node: dict, problems: list[str]) -> str:
    target = node.get(TARGET_KEY)
    if not isinstance(target, str) or not target:
        problems.append(f"{group}.{TARGET_KEY}={_show(target)} is not valid: a {group} config of your own needs "
                        f"{group}.{TARGET_KEY}, the dotted path of a callable (e.g. mypkg.nets.Net), or pick a built-in "
                        f"{group}")
        return ""
    return target


class _Problems:
    """Collects every invalid value, so a user fixes them all in one go."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def require(self, ok: bool, key: str, value: Any, valid: str) -> None:
        if not ok:
            self.messages.append(f"{key}={_show(value)} is not valid: {valid}")

    def choice(self, key: str, value: Any, choices: Sequence[str]) -> None:
        self.require(value in choices, key, value, f"use one of {', '.join(choices)}")

    def at_least(self, key: str, value: Any, minimum: float) -> None:
        ok = _is_number(value) and value >= minimum
        self.require(ok, key, value, f"must be a number >= {minimum:g}")

    def positive(self, key: str, value: Any) -> None:
        self.require(_is_number(value) and value > 0, key, value, "must be a number > 0")

    def fraction(self, key: str, value: Any, upper_inclusive: bool = False) -> None:
        ok = _is_number(value) and 0 <= value and (value <= 1 if upper_inclusive else value < 1)
        self.require(ok, key, value, f"must be in [0, 1{']' if upper_inclusive else ')'}")

    def sizes(self, key: str, values: Iterable[Any]) -> None:
        values = list(values)
        ok = bool(values) and all(isinstance(v, int) and v >= 1 for v in values)
        self.require(ok, key, values, "must be a non-empty list of integers >= 1")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def validate(job: JobConfig) -> None:
    """Reject every invalid value with the key, the value and what is valid (raises ConfigError)."""
    problems = _Problems()
    _check_entrypoint(job, problems)
    _check_scaling(job, problems)
    _check_trainer(job, problems)
    _check_optim(job, problems)
    _check_data(job, problems)
    _check_model(job, problems)
    _check_tracking_and_checkpoint(job, problems)
    _check_monitor(job, problems)
    _check_sweep(job, problems)
    if problems.messages:
        raise ConfigError(problems.messages)


def _check_scaling(job: JobConfig, problems: _Problems) -> None:
    scaling = job.scaling
    problems.at_least("scaling.num_workers", scaling.num_workers, 1)
    problems.positive("scaling.cpus_per_worker", scaling.cpus_per_worker)
    gpus = scaling.gpus_per_worker
    gpus_ok = _is_number(gpus) and gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())
    problems.require(gpus_ok, "scaling.gpus_per_worker", gpus, "must be 0, a fraction in (0, 1] or a whole number")
    problems.choice("scaling.placement_strategy", scaling.placement_strategy, PLACEMENT_STRATEGIES)
    problems.choice("scaling.backend", scaling.backend, BACKENDS)
    if scaling.backend == "nccl" and gpus_ok and gpus == 0:
        problems.require(False, "scaling.backend", "nccl", "nccl needs GPUs: set scaling.gpus_per_worker >= 1, or scaling.backend=auto or gloo")
    _check_placement_shape(scaling, problems)
    _check_worker_resources(scaling, problems)
    problems.positive("scaling.placement_timeout_s", scaling.placement_timeout_s)
    problems.positive("scaling.rendezvous_timeout_s", scaling.rendezvous_timeout_s)
    if job.cluster.num_cpus is not None:
        problems.at_least("cluster.num_cpus", job.cluster.num_cpus, 1)


def _check_placement_shape(scaling: ScalingConfig, problems: _Problems) -> None:
    per_node = scaling.workers_per_node
    if per_node is None:
        return
    problems.at_least("scaling.workers_per_node", per_node, 1)
    if _is_number(per_node) and per_node >= 1 and scaling.num_workers % per_node:
        problems.require(False, "scaling.workers_per_node", per_node,
                         f"scaling.num_workers={scaling.num_workers} must be a multiple of it (N nodes x {per_node})")
    if scaling.placement_strategy not in PER_NODE_STRATEGIES:
        problems.require(False, "scaling.placement_strategy", scaling.placement_strategy,
                         "with scaling.workers_per_node each node gets one bundle and nodes are spread strictly: "
                         "leave it at PACK, set STRICT_SPREAD, or unset scaling.workers_per_node")


def _check_worker_resources(scaling: ScalingConfig, problems: _Problems) -> None:
    if scaling.memory_per_worker_gb is not None:
        problems.positive("scaling.memory_per_worker_gb", scaling.memory_per_worker_gb)
    for name, amount in scaling.resources_per_worker.items():
        key = f"scaling.resources_per_worker.{name}"
        if name in RESERVED_RESOURCES:
            problems.require(False, key, amount, f"set {name} through {RESERVED_RESOURCES[name]}")
        else:
            problems.positive(key, amount)
    for name in scaling.nccl_env:
        problems.require(bool(_ENV_NAME.match(name)), "scaling.nccl_env", name,
                         "keys must be environment variable names such as NCCL_DEBUG")


def _check_entrypoint(job: JobConfig, problems: _Problems) -> None:
    problems.choice("entrypoint", job.entrypoint, ENTRYPOINTS)
    _check_script_argv(job.script, problems)
    if job.entrypoint != "script":
        return
    path = job.script.path
    if path is None:
        problems.require(False, "script.path", path, "entrypoint=script needs the script to run: set script.path=train.py")
    elif not Path(path).is_file():
        problems.require(False, "script.path", path, "no such file: give the path of a Python script")
    ranks = job.script.console_ranks
    if ranks is not None:
        bad = [rank for rank in ranks if isinstance(rank, bool) or not isinstance(rank, int)
               or not 0 <= rank < job.scaling.num_workers]
        problems.require(not bad, "script.console_ranks", _show(ranks), f"ranks are 0 to "
                         f"{job.scaling.num_workers - 1} (scaling.num_workers={job.scaling.num_workers}); "
                         f"not {_show(bad)}")


def _check_script_argv(script: ScriptConfig, problems: _Problems) -> None:
    """script.argv: one command-line string that shlex can split, and not together with script.args."""
    argv = script.argv
    if argv is None:
        return
    if not isinstance(argv, str):
        problems.require(False, "script.argv", argv, "Hydra read it as a number, a boolean or a list, not as the "
                         "text typed: quote the command line inside the override, 'script.argv=\"--lr 1e-3\"'")
        return
    try:
        shlex.split(argv)
    except ValueError as error:
        problems.require(False, "script.argv", argv, f"cannot be split into arguments as a shell would ({error}): "
                         "close the quote, or escape it with a backslash")
    if script.args:
        problems.require(False, "script.argv", argv, f"script.args={_show(script.args)} is set too: give the "
                         "arguments once, either as the list script.args or as the command line script.argv")


def _check_trainer(job: JobConfig, problems: _Problems) -> None:
    trainer = job.trainer
    problems.at_least("trainer.max_epochs", trainer.max_epochs, 1)
    if trainer.max_steps is not None:
        problems.at_least("trainer.max_steps", trainer.max_steps, 1)
    problems.at_least("trainer.seed", trainer.seed, 0)
    problems.choice("trainer.amp", trainer.amp, AMP_MODES)
    problems.at_least("trainer.grad_accum_steps", trainer.grad_accum_steps, 1)
    problems.at_least("trainer.log_every_n_steps", trainer.log_every_n_steps, 1)
    problems.at_least("trainer.eval_every_n_epochs", trainer.eval_every_n_epochs, 1)
    problems.choice("trainer.compile_mode", trainer.compile_mode, COMPILE_MODES)
    if trainer.peak_tflops is not None:
        problems.positive("trainer.peak_tflops", trainer.peak_tflops)
    if trainer.step_fn is not None:
        problems.require(isinstance(job.data, TargetDataConfig), "trainer.step_fn", trainer.step_fn,
                         "is for your own data set (data._target_); the built-in data sets use the built-in step")
    problems.positive("ddp.bucket_cap_mb", job.ddp.bucket_cap_mb)


def _check_optim(job: JobConfig, problems: _Problems) -> None:
    optim = job.optim
    problems.choice("optim.name", optim.name, OPTIMIZERS)
    problems.positive("optim.lr", optim.lr)
    problems.at_least("optim.weight_decay", optim.weight_decay, 0)
    problems.fraction("optim.momentum", optim.momentum)
    problems.choice("optim.schedule", optim.schedule, SCHEDULES)
    problems.at_least("optim.warmup_steps", optim.warmup_steps, 0)


def _check_data(job: JobConfig, problems: _Problems) -> None:
    data = job.data
    problems.at_least("data.batch_size", data.batch_size, 1)
    test_ok = _is_number(data.test_fraction) and 0 < data.test_fraction < 1
    problems.require(test_ok, "data.test_fraction", data.test_fraction, "must be in (0, 1)")
    if isinstance(data, SyntheticConfig):
        problems.at_least("data.num_samples", data.num_samples, 2)
        problems.sizes("data.input_shape", data.input_shape)
        problems.at_least("data.num_classes", data.num_classes, 2)
    if isinstance(data, TokensConfig):
        problems.at_least("data.num_sequences", data.num_sequences, 2)
        problems.at_least("data.seq_len", data.seq_len, 1)
        problems.at_least("data.vocab_size", data.vocab_size, 2)


def _check_model(job: JobConfig, problems: _Problems) -> None:
    model = job.model
    if isinstance(model, TargetModelConfig) or isinstance(job.data, TargetDataConfig):
        _check_own_components(job, problems)
        return
    if isinstance(model, MlpConfig):
        problems.sizes("model.hidden_sizes", model.hidden_sizes)
    elif isinstance(model, CnnConfig):
        problems.sizes("model.channels", model.channels)
        problems.at_least("model.hidden", model.hidden, 1)
        if not isinstance(job.data, TokensConfig):  # reported below, as the wrong pairing it is
            _check_cnn_input(job, model, problems)
    elif isinstance(model, GptConfig):
        _check_gpt(job, model, problems)
    if not isinstance(model, GptConfig) and isinstance(job.data, TokensConfig):
        problems.require(False, "data", "tokens", f"token sequences need model=gpt (model={model.name} classifies "
                         "tensors): set model=gpt, or data=synthetic")
    problems.fraction("model.dropout", model.dropout)


def _check_own_components(job: JobConfig, problems: _Problems) -> None:
    """Your own model needs your own data and the other way round (built-in models are sized by the
    built-in data sets); the callables themselves are checked where they can be imported (components)."""
    model, data = job.model, job.data
    if not isinstance(model, TargetModelConfig):
        problems.require(False, "model", model.name, f"data._target_={data.target} is your own data set: a built-in "
                         "model is sized for a built-in data set; set model._target_ to your model")
    if not isinstance(data, TargetDataConfig):
        problems.require(False, "data", data.name, f"model._target_={model.target} is your own model: give it your "
                         "own data with data._target_, or pick a built-in model")
    else:
        problems.at_least("data.num_workers", data.num_workers, 0)


def _check_gpt(job: JobConfig, model: GptConfig, problems: _Problems) -> None:
    problems.at_least("model.layers", model.layers, 1)
    problems.at_least("model.heads", model.heads, 1)
    problems.at_least("model.width", model.width, 1)
    problems.at_least("model.context", model.context, 1)
    if all(_is_number(value) and value >= 1 for value in (model.width, model.heads)) and model.width % model.heads:
        problems.require(False, "model.width", model.width, f"must be a multiple of model.heads={model.heads}")
    data = job.data
    if not isinstance(data, TokensConfig):
        problems.require(False, "data", data.name, "model=gpt predicts tokens: set data=tokens")
    elif _is_number(data.seq_len) and _is_number(model.context) and data.seq_len > model.context:
        problems.require(False, "data.seq_len", data.seq_len, f"must be at most model.context={model.context}")


def _check_cnn_input(job: JobConfig, model: CnnConfig, problems: _Problems) -> None:
    shape = data_input_shape(job.data)
    if len(shape) != 3:
        problems.require(False, "data.input_shape", list(shape), "model=cnn needs image inputs [channels, height, width]: set data.input_shape=[1,8,8] or use model=mlp")
        return
    pools = max(len(model.channels) - 1, 0)
    smallest = min(shape[1], shape[2])
    if smallest >> pools < 1:
        problems.require(False, "model.channels", model.channels, f"{pools} 2x2 pools shrink a {shape[1]}x{shape[2]} input to nothing: use at most {smallest.bit_length()} conv blocks")


def _check_tracking_and_checkpoint(job: JobConfig, problems: _Problems) -> None:
    tracking = job.tracking
    problems.require(bool(tracking.uri), "tracking.uri", tracking.uri, "must be a tracking URI such as sqlite:///mlflow.db or http://127.0.0.1:5000")
    problems.require(bool(tracking.experiment), "tracking.experiment", tracking.experiment, "must be a non-empty name")
    problems.choice("tracking.model_format", tracking.model_format, MODEL_FORMATS)
    problems.at_least("tracking.max_outage_s", tracking.max_outage_s, 0)
    problems.positive("tracking.flush_timeout_s", tracking.flush_timeout_s)
    _check_tracking_uri(tracking.uri, problems)
    checkpoint = job.checkpoint
    if checkpoint.every_n_steps is not None:
        problems.at_least("checkpoint.every_n_steps", checkpoint.every_n_steps, 1)
    problems.at_least("checkpoint.keep_last", checkpoint.keep_last, 1)
    failure = job.failure
    restarts_ok = isinstance(failure.max_restarts, int) and failure.max_restarts >= -1
    problems.require(restarts_ok, "failure.max_restarts", failure.max_restarts, "must be -1 (no limit) or a number >= 0")
    problems.choice("failure.restart_on", failure.restart_on, RESTART_ON)
    problems.positive("failure.hang_timeout_s", failure.hang_timeout_s)
    if job.trainer.resume is not None:
        problems.require(bool(job.trainer.resume.strip()), "trainer.resume", job.trainer.resume,
                         "use latest, a checkpoint path or an MLflow run id")


def _check_tracking_uri(uri: str, problems: _Problems) -> None:
    """A store MLflow knows, and no password inside (it would land in the config, the params and every log)."""
    scheme = uri.partition("://")[0].split("+", 1)[0].lower()  # a bare "databricks" is its own scheme
    if uri and scheme not in TRACKING_SCHEMES:
        problems.require(False, "tracking.uri", redact_value(uri), "use sqlite:///mlflow.db, "
                         "http://127.0.0.1:5000 (a tracking server) or another MLflow store URI "
                         f"({', '.join(TRACKING_SCHEMES)})")
    shown = redact_value(uri)
    problems.require(shown == uri, "tracking.uri", shown, "credentials do not belong in the config: set "
                     "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a PostgreSQL store: PGPASSWORD) "
                     "in the environment")


MIN_MONITOR_INTERVAL_S = 0.1
"""NVML's GPM metrics need samples at least 100 ms apart."""


def _check_monitor(job: JobConfig, problems: _Problems) -> None:
    monitor = job.monitor
    problems.at_least("monitor.interval_s", monitor.interval_s, MIN_MONITOR_INTERVAL_S)
    ratio = monitor.straggler_ratio
    problems.require(_is_number(ratio) and ratio > 1, "monitor.straggler_ratio", ratio,
                     "must be a number > 1 (a rank this many times slower than the median is a straggler)")
    problems.at_least("monitor.straggler_min_gap_s", monitor.straggler_min_gap_s, 0)
    percent = monitor.low_util_percent
    problems.require(_is_number(percent) and 0 <= percent <= 100, "monitor.low_util_percent", percent,
                     "must be a percentage in [0, 100] (0 turns the low-utilization warning off)")


def _check_sweep(job: JobConfig, problems: _Problems) -> None:
    sweep = job.sweep
    if job.entrypoint == "builtin":  # a script's objective is any key it reports with orchestrator.report
        problems.require(sweep.objective in SWEEP_OBJECTIVES, "sweep.objective", sweep.objective,
                         f"the built-in loop reports {', '.join(SWEEP_OBJECTIVES)}")
    problems.choice("sweep.direction", sweep.direction, SWEEP_DIRECTIONS)
    problems.choice("sweep.early_stop", sweep.early_stop, EARLY_STOP_RULES)
    problems.at_least("sweep.early_stop_min_trials", sweep.early_stop_min_trials, 1)
