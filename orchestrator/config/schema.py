"""Typed job configuration: the frozen dataclasses Hydra composes and every module reads.

Each field carries a docstring; docs/configuration.md lists every key with its default, generated from
those docstrings by config/reference.py. Each section says what is wrong with itself (`check`); the
rules between sections are in rules.py. Choice fields are Literal types for the type checker and plain
strings for OmegaConf, so that `check` (not OmegaConf) rejects a bad value with a message that names
the key, the value and the valid choices.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Literal, Optional, TypeAlias, get_args

from orchestrator.config.problems import Problems, is_number, show
from orchestrator.redaction import redact_value
from orchestrator.registry.names import alias_problem, model_name_problem

MISSING = "???"
"""OmegaConf's marker of a value that must be given (its own `omegaconf.MISSING` is this string): the
schema stays free of OmegaConf, and Hydra still refuses to run with the value unset."""

# Each choice is a Literal for the type checker and a plain `str` for OmegaConf, which refuses Literal
# annotations: a bad value then reaches `check` below (a message naming the key and the valid choices)
# rather than failing inside OmegaConf. The tuple of valid values is read off the Literal: one list each.
PlacementStrategyChoice = Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"]
BackendChoice = Literal["auto", "nccl", "gloo"]
AmpChoice = Literal["none", "bf16", "fp16"]
OptimizerChoice = Literal["sgd", "adamw"]
ScheduleChoice = Literal["constant", "cosine"]
ModelFormatChoice = Literal["pt2", "pickle"]
EntrypointChoice = Literal["builtin", "script"]
RestartOnChoice = Literal["any", "infra_only"]
DirectionChoice = Literal["maximize", "minimize"]
EarlyStopChoice = Literal["none", "median", "asha", "hyperband"]
CompileModeChoice = Literal["default", "reduce-overhead", "max-autotune"]
StrategyChoice = Literal["ddp", "fsdp"]
ElasticBatchChoice = Literal["keep_global", "keep_per_worker"]
if TYPE_CHECKING:
    PlacementStrategy: TypeAlias = PlacementStrategyChoice
    Backend: TypeAlias = BackendChoice
    Amp: TypeAlias = AmpChoice
    Optimizer: TypeAlias = OptimizerChoice
    Schedule: TypeAlias = ScheduleChoice
    ModelFormat: TypeAlias = ModelFormatChoice
    Entrypoint: TypeAlias = EntrypointChoice
    RestartOn: TypeAlias = RestartOnChoice
    Direction: TypeAlias = DirectionChoice
    EarlyStop: TypeAlias = EarlyStopChoice
    CompileMode: TypeAlias = CompileModeChoice
    Strategy: TypeAlias = StrategyChoice
    ElasticBatch: TypeAlias = ElasticBatchChoice
else:
    PlacementStrategy = Backend = Amp = Optimizer = Schedule = str
    ModelFormat = Entrypoint = RestartOn = Direction = EarlyStop = CompileMode = Strategy = ElasticBatch = str

PLACEMENT_STRATEGIES: tuple[str, ...] = get_args(PlacementStrategyChoice)
BACKENDS: tuple[str, ...] = get_args(BackendChoice)
AMP_MODES: tuple[str, ...] = get_args(AmpChoice)
OPTIMIZERS: tuple[str, ...] = get_args(OptimizerChoice)
SCHEDULES: tuple[str, ...] = get_args(ScheduleChoice)
MODEL_FORMATS: tuple[str, ...] = get_args(ModelFormatChoice)
ENTRYPOINTS: tuple[str, ...] = get_args(EntrypointChoice)
RESTART_ON: tuple[str, ...] = get_args(RestartOnChoice)
SWEEP_DIRECTIONS: tuple[str, ...] = get_args(DirectionChoice)
EARLY_STOP_RULES: tuple[str, ...] = get_args(EarlyStopChoice)
COMPILE_MODES: tuple[str, ...] = get_args(CompileModeChoice)
STRATEGIES: tuple[str, ...] = get_args(StrategyChoice)
ELASTIC_BATCHES: tuple[str, ...] = get_args(ElasticBatchChoice)
SWEEP_OBJECTIVES = ("eval/accuracy", "eval/loss", "train/loss", "train/samples_per_s")
"""Metrics the built-in loop reports that a sweep can optimize."""
PER_NODE_STRATEGIES = ("PACK", "STRICT_SPREAD")
"""The placement strategies that go with scaling.workers_per_node (one bundle per node)."""
RESERVED_RESOURCES = {
    "CPU": "scaling.cpus_per_worker",
    "GPU": "scaling.gpus_per_worker",
    "memory": "scaling.memory_per_worker_gb",
}
"""Ray resources that have a key of their own, and which."""
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
"""Stores MLflow 3 records into (a driver suffix such as postgresql+psycopg2 is allowed)."""
MIN_MONITOR_INTERVAL_S = 0.1
"""NVML's GPM metrics need samples at least 100 ms apart."""
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_POOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ClusterConfig:
    """Which Ray cluster runs the job."""

    address: Optional[str] = None
    """Ray cluster to connect to (auto, HOST:6379 or ray://HOST:10001); null starts an embedded
    local Ray instance for this job."""
    num_cpus: Optional[int] = None
    """CPUs the embedded instance offers; null = all CPUs of this machine."""
    dashboard: bool = False
    """Start the Ray dashboard with the embedded instance (costs start-up time)."""
    runtime_env: Dict[str, Any] = field(default_factory=dict)
    """Ray runtime_env for the job (env_vars, pip, ...); `orchestrator submit` adds the working_dir."""
    pool: Optional[str] = None
    """The name of a warm pool on the cluster at cluster.address (`orchestrator pool up --name NAME`): the job
    leases its ranks' workers there (started, torch imported) instead of starting its own, and gives them
    back at its end; null = the job starts its own workers."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found`."""
        if self.num_cpus is not None:
            found.at_least("cluster.num_cpus", self.num_cpus, 1)
        variables = self.runtime_env.get("env_vars")
        if variables is not None:
            found.require(
                isinstance(variables, Mapping),
                "cluster.runtime_env.env_vars",
                variables,
                "a mapping of variable names to values: '+cluster.runtime_env.env_vars={NAME:value}'",
            )
        for name, value in variables.items() if isinstance(variables, Mapping) else ():
            typed = str(value).lower() if isinstance(value, bool) else value  # as YAML spells it
            # an environment holds text: a whole number is written as Hydra read it (OMP_NUM_THREADS=1 -> "1"),
            # but a float or a boolean would not come back as typed (1e-3 -> "0.001", true -> "True")
            found.require(
                isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)),
                f"cluster.runtime_env.env_vars.{name}",
                value,
                f"a variable's value is text: quote it as typed, '+cluster.runtime_env.env_vars.{name}=\"{typed}\"'",
            )
        if self.pool is not None:
            found.require(
                self.address is not None,
                "cluster.pool",
                self.pool,
                "a pool lives on a running cluster: set cluster.address to the cluster that `orchestrator pool up` "
                "started it on (the embedded instance of a job has none)",
            )
            found.require(
                bool(_POOL_NAME.match(self.pool)),
                "cluster.pool",
                self.pool,
                "a pool name is letters, digits, '-' and '_' (as `orchestrator pool up --name` takes it)",
            )


@dataclass(frozen=True)
class ScalingConfig:
    """How many workers, with what resources, placed how."""

    num_workers: int = 2
    """Number of DDP workers (ranks), one Ray actor each."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker; also the worker's torch thread count (at least 1)."""
    gpus_per_worker: float = 0.0
    """GPUs per worker; 0 = CPU training."""
    placement_strategy: PlacementStrategy = "PACK"
    """Ray placement group strategy: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD."""
    backend: Backend = "auto"
    """torch.distributed backend: auto (nccl when workers hold GPUs, else gloo), nccl or gloo."""
    workers_per_node: Optional[int] = None
    """Workers on every node (the "N nodes x G GPUs" shape): one bundle per node, nodes strictly
    spread; null = bundles placed by placement_strategy."""
    memory_per_worker_gb: Optional[float] = None
    """Memory reserved per worker in GiB (Ray's `memory` resource); null = none reserved."""
    resources_per_worker: Dict[str, float] = field(default_factory=dict)
    """Custom Ray resources per worker, e.g. {"accelerator_type:H100": 0.001}."""
    nccl_env: Dict[str, str] = field(default_factory=dict)
    """Environment set in every worker before the process group starts (NCCL_IB_DISABLE, NCCL_DEBUG,
    NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME, ...)."""
    placement_timeout_s: float = 60.0
    """How long to wait for the placement group (lets an autoscaler add nodes) before failing."""
    rendezvous_timeout_s: float = 300.0
    """Process-group timeout: rendezvous and any collective that waits longer than this fails."""
    strategy: Strategy = "ddp"
    """How the built-in loop spreads the model: ddp (a full replica per rank) or fsdp (parameters, gradients
    and optimizer state sharded across the ranks with FSDP2; see the `fsdp` section)."""
    min_workers: Optional[int] = None
    """Elastic training: the fewest workers the job continues on when workers are lost and cannot be placed
    again within placement_timeout_s (it resumes from the newest checkpoint on those it can place, and grows
    back to num_workers when resources return). null = a fixed size: the job waits for replacements or fails."""
    resize_check_s: float = 30.0
    """Elastic jobs running below num_workers: how often to check whether lost workers can be placed again;
    the job grows back at the next checkpoint after such a check succeeds."""
    elastic_batch: ElasticBatch = "keep_global"
    """What a resize keeps: keep_global (the global batch of num_workers x data.batch_size x
    trainer.grad_accum_steps samples per optimizer step: fewer workers accumulate more, so the optimizer sees
    the same batches and the learning-rate schedule stays valid) or keep_per_worker (each worker keeps its
    batch: the global batch shrinks and grows with the workers)."""

    @property
    def elastic(self) -> bool:
        """Whether the job may run on fewer than num_workers workers."""
        return self.min_workers is not None

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found`."""
        found.at_least("scaling.num_workers", self.num_workers, 1)
        self._check_elastic(found)
        found.choice("scaling.strategy", self.strategy, STRATEGIES)
        found.positive("scaling.cpus_per_worker", self.cpus_per_worker)
        gpus = self.gpus_per_worker
        gpus_ok = is_number(gpus) and gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())
        found.require(gpus_ok, "scaling.gpus_per_worker", gpus, "must be 0, a fraction in (0, 1] or a whole number")
        found.choice("scaling.placement_strategy", self.placement_strategy, PLACEMENT_STRATEGIES)
        found.choice("scaling.backend", self.backend, BACKENDS)
        if self.backend == "nccl" and gpus_ok and gpus == 0:
            found.require(
                False,
                "scaling.backend",
                "nccl",
                "nccl needs GPUs: set scaling.gpus_per_worker >= 1, or scaling.backend=auto or gloo",
            )
        self._check_shape(found)
        self._check_resources(found)
        found.positive("scaling.placement_timeout_s", self.placement_timeout_s)
        found.positive("scaling.rendezvous_timeout_s", self.rendezvous_timeout_s)

    def _check_elastic(self, found: Problems) -> None:
        found.positive("scaling.resize_check_s", self.resize_check_s)
        found.choice("scaling.elastic_batch", self.elastic_batch, ELASTIC_BATCHES)
        if self.min_workers is None:
            return
        most = self.num_workers if is_number(self.num_workers) else 1
        found.require(
            isinstance(self.min_workers, int) and 1 <= self.min_workers <= most,
            "scaling.min_workers",
            self.min_workers,
            f"must be a whole number from 1 to scaling.num_workers={most}, or null for a fixed size",
        )
        per_node = self.workers_per_node
        if isinstance(self.min_workers, int) and isinstance(per_node, int) and per_node > 0:
            found.require(
                self.min_workers % per_node == 0,
                "scaling.min_workers",
                self.min_workers,
                f"whole nodes are lost and placed: use a multiple of scaling.workers_per_node={per_node}",
            )

    def _check_shape(self, found: Problems) -> None:
        per_node = self.workers_per_node
        if per_node is None:
            return
        found.at_least("scaling.workers_per_node", per_node, 1)
        if is_number(per_node) and per_node >= 1 and self.num_workers % per_node:
            found.require(
                False,
                "scaling.workers_per_node",
                per_node,
                f"scaling.num_workers={self.num_workers} must be a multiple of it (N nodes x {per_node})",
            )
        if self.placement_strategy not in PER_NODE_STRATEGIES:
            found.require(
                False,
                "scaling.placement_strategy",
                self.placement_strategy,
                "with scaling.workers_per_node each node gets one bundle and nodes are spread strictly: "
                "leave it at PACK, set STRICT_SPREAD, or unset scaling.workers_per_node",
            )

    def _check_resources(self, found: Problems) -> None:
        if self.memory_per_worker_gb is not None:
            found.positive("scaling.memory_per_worker_gb", self.memory_per_worker_gb)
        for name, amount in self.resources_per_worker.items():
            key = f"scaling.resources_per_worker.{name}"
            if name in RESERVED_RESOURCES:
                found.require(False, key, amount, f"set {name} through {RESERVED_RESOURCES[name]}")
            else:
                found.positive(key, amount)
        for name in self.nccl_env:
            found.require(
                bool(_ENV_NAME.match(name)),
                "scaling.nccl_env",
                name,
                "keys must be environment variable names such as NCCL_DEBUG",
            )


@dataclass(frozen=True)
class TrainerConfig:
    """The training loop."""

    max_epochs: int = 4
    """Epochs to train when max_steps is null."""
    max_steps: Optional[int] = None
    """Optimizer steps to train; null = train by epochs."""
    seed: int = 0
    """Seed for model init, data split and shuffling; the same seed gives the same run."""
    amp: Amp = "none"
    """Mixed precision: none, bf16 (autocast) or fp16 (autocast + GradScaler)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step (gradients sync only on the last)."""
    log_every_n_steps: int = 10
    """Log train/loss and train/samples_per_s every this many optimizer steps."""
    eval_every_n_epochs: int = 1
    """Evaluate on the test split every this many epochs (and always at the end)."""
    resume: Optional[str] = None
    """Continue a stopped or failed run into the same MLflow run: latest, a checkpoint (step_<N>) or run
    checkpoint directory, or an MLflow run id; null = start fresh."""
    compile: bool = False
    """Compile the model with torch.compile, inside DDP (on CPU this needs a C++ compiler; the first steps compile)."""
    compile_mode: CompileMode = "default"
    """torch.compile mode: default, reduce-overhead (CUDA graphs) or max-autotune (slow compile, fastest kernels)."""
    tf32: bool = False
    """Allow TF32 tensor cores for float32 matmuls and convolutions on CUDA (Ampere and newer): faster, about
    1e-3 relative precision."""
    peak_tflops: Optional[float] = None
    """Peak TFLOP/s of one worker's device (e.g. 989 for an H100 SXM in bf16), for the train/mfu metric
    (model=gpt and your own models); null = no train/mfu."""
    step_fn: Optional[str] = None
    """Your own training step for your own data (data._target_): a dotted path to fn(model, batch) returning the
    loss, or (loss, metrics) with metrics a dict of scalars (logged as train/<key> and, in evaluation,
    eval/<key>); the batch is the loader's collated items, of any shape (dicts, ...). null = loss(model(inputs),
    targets) on (inputs, targets) items."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found` (but trainer.resume: see `check_resume`)."""
        found.at_least("trainer.max_epochs", self.max_epochs, 1)
        if self.max_steps is not None:
            found.at_least("trainer.max_steps", self.max_steps, 1)
        found.at_least("trainer.seed", self.seed, 0)
        found.choice("trainer.amp", self.amp, AMP_MODES)
        found.at_least("trainer.grad_accum_steps", self.grad_accum_steps, 1)
        found.at_least("trainer.log_every_n_steps", self.log_every_n_steps, 1)
        found.at_least("trainer.eval_every_n_epochs", self.eval_every_n_epochs, 1)
        found.choice("trainer.compile_mode", self.compile_mode, COMPILE_MODES)
        if self.peak_tflops is not None:
            found.positive("trainer.peak_tflops", self.peak_tflops)

    def check_resume(self, found: Problems) -> None:
        """trainer.resume, when set, names something: latest, a checkpoint or a run."""
        if self.resume is not None:
            found.require(
                bool(self.resume.strip()),
                "trainer.resume",
                self.resume,
                "use latest, a checkpoint path or an MLflow run id",
            )


@dataclass(frozen=True)
class DdpConfig:
    """Options of torch's DistributedDataParallel wrapper."""

    bucket_cap_mb: float = 25.0
    """Size of the gradient buckets all-reduced together, in MiB (DDP's default: 25)."""
    gradient_as_bucket_view: bool = False
    """Gradients are views into the all-reduce buckets: saves one gradient-sized copy and its memory."""
    static_graph: bool = False
    """The set of parameters used and the graph are the same every step: lets DDP skip per-step checks."""
    find_unused_parameters: bool = False
    """Search each step's graph for parameters that got no gradient (needed only by models that skip some)."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found`."""
        found.positive("ddp.bucket_cap_mb", self.bucket_cap_mb)


_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class FsdpConfig:
    """Options of FSDP2 (`torch.distributed.fsdp.fully_shard`), used with scaling.strategy=fsdp."""

    wrap: List[str] = field(default_factory=list)
    """Module classes (dotted names, e.g. mypkg.model.Block) sharded as one unit each, then the root; empty =
    each transformer block (gpt), each top-level child (mlp, cnn, and your own model)."""
    reshard_after_forward: bool = True
    """Free the gathered parameters after each unit's forward and gather them again for its backward: less
    memory, one more all-gather per unit and step."""
    cpu_offload: bool = False
    """Keep the sharded parameters, gradients and optimizer state in CPU memory, moved to the GPU per unit
    (GPU workers only)."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found`."""
        bad = [name for name in self.wrap if not isinstance(name, str) or not _DOTTED_NAME.match(name)]
        found.require(
            not bad,
            "fsdp.wrap",
            show(list(self.wrap)),
            f"names module classes as package.module.Class; not {show(bad)}",
        )


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: Optimizer = "adamw"
    """Optimizer: sgd or adamw."""
    lr: float = 0.003
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Weight decay."""
    momentum: float = 0.9
    """SGD momentum (sgd only)."""
    schedule: Schedule = "cosine"
    """Learning-rate schedule after warm-up: constant or cosine (decays to 0 at the last step)."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0 to lr."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found`."""
        found.choice("optim.name", self.name, OPTIMIZERS)
        found.positive("optim.lr", self.lr)
        found.at_least("optim.weight_decay", self.weight_decay, 0)
        found.fraction("optim.momentum", self.momentum)
        found.choice("optim.schedule", self.schedule, SCHEDULES)
        found.at_least("optim.warmup_steps", self.warmup_steps, 0)


@dataclass(frozen=True)
class ModelConfig:
    """Base of the `model` group; `name` selects the architecture."""

    name: str = MISSING
    """Architecture; set by the group option (mlp, cnn, gpt)."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this model's own keys into `found` (the base has none)."""


@dataclass(frozen=True)
class MlpConfig(ModelConfig):
    """A multi-layer perceptron over the flattened input."""

    name: str = "mlp"
    hidden_sizes: List[int] = field(default_factory=lambda: [128, 128])
    """Width of each hidden layer."""
    dropout: float = 0.0
    """Dropout after each hidden layer."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this model's own keys into `found`."""
        found.sizes("model.hidden_sizes", self.hidden_sizes)
        found.fraction("model.dropout", self.dropout)


@dataclass(frozen=True)
class CnnConfig(ModelConfig):
    """A small convolutional network for (C, H, W) images."""

    name: str = "cnn"
    channels: List[int] = field(default_factory=lambda: [32, 64])
    """Output channels of each 3x3 conv block (a 2x2 max-pool follows each but the first)."""
    hidden: int = 128
    """Width of the fully connected layer before the classifier."""
    dropout: float = 0.0
    """Dropout before the classifier."""
    channels_last: bool = False
    """Keep conv weights and inputs in the channels_last memory format (faster on CUDA tensor cores, with amp)."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this model's own keys into `found`."""
        found.sizes("model.channels", self.channels)
        found.at_least("model.hidden", self.hidden, 1)
        found.fraction("model.dropout", self.dropout)


@dataclass(frozen=True)
class GptConfig(ModelConfig):
    """A small decoder-only transformer (pre-norm blocks, causal attention, tied embeddings) for data=tokens."""

    name: str = "gpt"
    layers: int = 4
    """Transformer blocks."""
    heads: int = 4
    """Attention heads per block (width must be a multiple of heads)."""
    width: int = 256
    """Model width (embedding size); the MLP is 4x wider."""
    context: int = 128
    """Longest sequence the model takes (its position embeddings); data.seq_len must not exceed it."""
    dropout: float = 0.0
    """Dropout on attention weights and after each residual branch."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this model's own keys into `found`."""
        found.at_least("model.layers", self.layers, 1)
        found.at_least("model.heads", self.heads, 1)
        found.at_least("model.width", self.width, 1)
        found.at_least("model.context", self.context, 1)
        if all(is_number(value) and value >= 1 for value in (self.width, self.heads)) and self.width % self.heads:
            found.require(False, "model.width", self.width, f"must be a multiple of model.heads={self.heads}")
        found.fraction("model.dropout", self.dropout)


@dataclass(frozen=True)
class TargetModelConfig(ModelConfig):
    """The user's own model (`model._target_`): the dotted path called with the node's other keys.

    Composed as a plain node (conf/model/target.yaml or a file of the user's config directory) and
    typed by load_config, which moves `_target_` to `target` and every other key to `kwargs`.
    """

    name: str = "target"
    target: str = MISSING
    """Dotted path of a callable that returns an nn.Module (a class or a factory function)."""
    kwargs: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the call: the model node's keys other than `_target_`."""


@dataclass(frozen=True)
class DataConfig:
    """Base of the `data` group; `name` selects the data set."""

    name: str = MISSING
    """Data set; set by the group option (digits, synthetic, tokens)."""
    batch_size: int = 32
    """Samples per worker per micro-batch (the global batch is batch_size x num_workers)."""
    test_fraction: float = 0.2
    """Share of the samples held out for evaluation (split fixed by trainer.seed)."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this data set's keys into `found`."""
        found.at_least("data.batch_size", self.batch_size, 1)
        test_ok = is_number(self.test_fraction) and 0 < self.test_fraction < 1
        found.require(test_ok, "data.test_fraction", self.test_fraction, "must be in (0, 1)")


@dataclass(frozen=True)
class DigitsConfig(DataConfig):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)."""

    name: str = "digits"


@dataclass(frozen=True)
class SyntheticConfig(DataConfig):
    """Random inputs labelled by a fixed random teacher network: learnable, no download."""

    name: str = "synthetic"
    num_samples: int = 8192
    """Samples generated (train + test)."""
    input_shape: List[int] = field(default_factory=lambda: [64])
    """Shape of one input: [features] for the mlp, [channels, height, width] for the cnn."""
    num_classes: int = 10
    """Number of classes."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this data set's keys into `found`."""
        super().check(found)
        found.at_least("data.num_samples", self.num_samples, 2)
        found.sizes("data.input_shape", self.input_shape)
        found.at_least("data.num_classes", self.num_classes, 2)


@dataclass(frozen=True)
class TokensConfig(DataConfig):
    """Synthetic token sequences from a fixed random sparse bigram chain: next-token prediction for model=gpt."""

    name: str = "tokens"
    num_sequences: int = 4096
    """Sequences generated (train + test)."""
    seq_len: int = 128
    """Tokens the model reads per sequence (at most model.context)."""
    vocab_size: int = 256
    """Distinct tokens."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this data set's keys into `found`."""
        super().check(found)
        found.at_least("data.num_sequences", self.num_sequences, 2)
        found.at_least("data.seq_len", self.seq_len, 1)
        found.at_least("data.vocab_size", self.vocab_size, 2)


@dataclass(frozen=True)
class TargetDataConfig(DataConfig):
    """The user's own data (`data._target_`): the dotted path called with the node's keys other than
    the loader's (`batch_size`, `num_workers`); it returns (train_dataset, eval_dataset or None), map-style
    torch Datasets whose items are (inputs, targets)."""

    name: str = "target"
    target: str = MISSING
    """Dotted path of the callable that builds the data sets."""
    kwargs: Dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the call: the data node's keys other than `_target_` and the loader's."""
    num_workers: int = 0
    """DataLoader worker processes per rank (0 = load in the training process)."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this data set's keys into `found`."""
        super().check(found)
        found.at_least("data.num_workers", self.num_workers, 0)


@dataclass(frozen=True)
class TargetConfig:
    """A callable named by a dotted path, with keyword arguments (`loss._target_` and its keys)."""

    target: str
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow tracking."""

    enabled: bool = True
    """Record the run in MLflow; false = no tracking at all."""
    uri: str = "sqlite:///mlflow.db"
    """MLflow tracking URI; the default is a SQLite file in the working directory, with artifacts
    in the folder `mlartifacts` beside it; http://127.0.0.1:5000 sends runs to a tracking server
    (`orchestrator mlflow-server`). Credentials come from the environment, never from here."""
    experiment: str = "orchestrator"
    """MLflow experiment name (created when missing)."""
    run_name: Optional[str] = None
    """MLflow run name; null lets MLflow pick one."""
    log_model: bool = True
    """Log the trained model with mlflow.pytorch.log_model under the name `model`."""
    model_format: ModelFormat = "pt2"
    """Serialization of the logged model: pt2 (torch.export, MLflow 3's default) or pickle."""
    max_outage_s: float = 300.0
    """While the tracking store is unreachable, metrics are buffered and retried with backoff for up to this
    long; older ones are dropped (the console says which) and training goes on."""
    flush_timeout_s: float = 30.0
    """Longest wait at the end of the run for buffered metrics to reach the store; what is left is dropped
    and reported."""
    register_as: Optional[str] = None
    """At the end of a successful run, make the logged model a new version of this registered model in
    the MLflow Model Registry, tagged with the run id, the eval/ metrics and the SHA-256 of config.yaml;
    null = no registration. A sweep (hydra/launcher=ray) registers only its best trial by
    sweep.objective, once, at its end. Needs log_model=true."""
    register_alias: Optional[str] = None
    """Point this alias of the registered model (e.g. candidate) at the new version; needs register_as.
    `orchestrator promote NAME --alias champion` moves aliases afterwards."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found`."""
        found.require(
            bool(self.uri),
            "tracking.uri",
            self.uri,
            "must be a tracking URI such as sqlite:///mlflow.db or http://127.0.0.1:5000",
        )
        found.require(bool(self.experiment), "tracking.experiment", self.experiment, "must be a non-empty name")
        found.choice("tracking.model_format", self.model_format, MODEL_FORMATS)
        found.at_least("tracking.max_outage_s", self.max_outage_s, 0)
        found.positive("tracking.flush_timeout_s", self.flush_timeout_s)
        self._check_uri(found)
        self._check_registry(found)

    def _check_registry(self, found: Problems) -> None:
        """A name and alias the registry accepts, and a logged model to register."""
        if self.register_as is not None:
            problem = model_name_problem(self.register_as)
            found.require(problem is None, "tracking.register_as", self.register_as, problem or "")
            found.require(
                self.enabled and self.log_model,
                "tracking.register_as",
                self.register_as,
                "registering needs the logged model: set tracking.log_model=true (and tracking.enabled=true), "
                "or tracking.register_as=null",
            )
        if self.register_alias is not None:
            found.require(
                self.register_as is not None,
                "tracking.register_alias",
                self.register_alias,
                "an alias belongs to a registered model: set tracking.register_as=NAME too",
            )
            problem = alias_problem(self.register_alias)
            found.require(problem is None, "tracking.register_alias", self.register_alias, problem or "")

    def _check_uri(self, found: Problems) -> None:
        """A store MLflow knows, and no password inside (it would land in the config, the params and every log)."""
        uri = self.uri
        scheme = uri.partition("://")[0].split("+", 1)[0].lower()  # a bare "databricks" is its own scheme
        if uri and scheme not in TRACKING_SCHEMES:
            found.require(
                False,
                "tracking.uri",
                redact_value(uri),
                "use sqlite:///mlflow.db, "
                "http://127.0.0.1:5000 (a tracking server) or another MLflow store URI "
                f"({', '.join(TRACKING_SCHEMES)})",
            )
        shown = redact_value(uri)
        found.require(
            shown == uri,
            "tracking.uri",
            shown,
            "credentials do not belong in the config: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a PostgreSQL store: PGPASSWORD) "
            "in the environment",
        )


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints: every rank writes its shards (Distributed Checkpoint) into one folder per checkpoint."""

    dir: str = "checkpoints"
    """Directory for checkpoints (one sub-folder per run); must be shared storage across nodes."""
    every_n_steps: Optional[int] = None
    """Also checkpoint every this many optimizer steps; null = only at each epoch end."""
    keep_last: int = 2
    """Complete checkpoints kept per run; older ones are deleted."""
    upload: bool = False
    """Also store each complete checkpoint in the run's MLflow artifacts (under checkpoints/)."""
    async_save: bool = True
    """Copy the state to CPU memory and write the shards in the background (training waits only for the
    copy); false = training waits until the checkpoint is on disk."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found`."""
        if self.every_n_steps is not None:
            found.at_least("checkpoint.every_n_steps", self.every_n_steps, 1)
        found.at_least("checkpoint.keep_last", self.keep_last, 1)


@dataclass(frozen=True)
class FailureConfig:
    """What happens when a worker dies, hangs or raises."""

    max_restarts: int = 3
    """Restarts from the newest checkpoint before the job fails; -1 = no limit."""
    restart_on: RestartOn = "any"
    """any (worker deaths, hangs and exceptions in user code) or infra_only (not exceptions)."""
    hang_timeout_s: float = 300.0
    """A rank that finishes no optimizer step for this long is treated as failed."""
    retry_script_errors: bool = False
    """entrypoint=script: also restart a script that exited with an error status. By default that fails the
    job at once, as under torchrun (a bad argument fails the same way every time); a script killed by a
    signal (the OOM killer's SIGKILL) is restarted like any worker that died."""
    max_preemptions: int = -1
    """Restarts after a preemption (a node drained with a deadline, SIGTERM to a worker as Kubernetes sends
    before an eviction) before the job fails; they do not count against max_restarts. -1 = no limit."""
    spare_workers: int = 0
    """Idle, fully started rank processes (torch imported) kept in the job's placement group, so that a lost
    rank is replaced at once instead of after a new process starts; a new spare then starts in the background."""
    exclude_node_after: int = 2
    """A node on which ranks of this job failed this many times (deaths, hangs, broken collectives) is not
    used again by the job; 0 = never exclude a node."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found`."""
        restarts_ok = isinstance(self.max_restarts, int) and self.max_restarts >= -1
        found.require(restarts_ok, "failure.max_restarts", self.max_restarts, "must be -1 (no limit) or a number >= 0")
        preemptions_ok = isinstance(self.max_preemptions, int) and self.max_preemptions >= -1
        found.require(
            preemptions_ok, "failure.max_preemptions", self.max_preemptions, "must be -1 (no limit) or a number >= 0"
        )
        found.require(
            isinstance(self.spare_workers, int) and self.spare_workers >= 0,
            "failure.spare_workers",
            self.spare_workers,
            "must be a whole number >= 0",
        )
        found.require(
            isinstance(self.exclude_node_after, int) and self.exclude_node_after >= 0,
            "failure.exclude_node_after",
            self.exclude_node_after,
            "must be a whole number >= 0 (0 = never exclude a node)",
        )
        found.choice("failure.restart_on", self.restart_on, RESTART_ON)
        found.positive("failure.hang_timeout_s", self.hang_timeout_s)


@dataclass(frozen=True)
class ScriptConfig:
    """An unmodified torchrun-style script run on every worker (entrypoint=script)."""

    path: Optional[str] = None
    """The script; relative paths are taken from the working directory."""
    args: List[str] = field(default_factory=list)
    """Command-line arguments passed to the script, one item each. Hydra reads every item (1e-3 arrives as
    0.001, true as True): quote such items ('1e-3'), or give the whole command line as script.argv."""
    argv: Any = None
    """The script's command line as one string, split as a shell would (shlex) and passed exactly as typed:
    'script.argv="--lr 1e-3 --steps=100"' (the inner quotes keep Hydra from reading it). Set script.args or
    script.argv, not both."""

    console_ranks: Optional[List[int]] = None
    """Ranks whose stdout and stderr the console shows (and the run's console.log records), like torchrun's
    --local-ranks-filter but by global rank; null = every rank. A failing rank's stderr tail is in the error
    either way."""
    log_dir: Optional[str] = None
    """Also write every rank's stdout and stderr to <log_dir>/<ray name>/attempt_<N>/rank_<R>/{stdout,stderr}.log
    on the rank's node, as torchrun's --log-dir (the Ray name is the run's tag orchestrator.ray_name, new for
    every command); each restart gets a new attempt folder and no file is ever overwritten. null = no files."""
    warm_start: bool = True
    """Where a worker has a script's process started ahead, with torch imported (a pool's worker, a sweep's reused
    worker after a script trial, a spare), run the script there instead of in a new process: seconds sooner to
    its first line. Not used when the rank's environment differs from that process's in a variable read at start
    (OMP_NUM_THREADS, the locale, PYTHONHASHSEED, ...). false: always a new process, for a script that must set
    such variables itself before it imports torch."""

    def arguments(self) -> list[str]:
        """What the script gets as sys.argv[1:]: script.argv split as a shell would, else script.args."""
        return shlex.split(self.argv) if isinstance(self.argv, str) else list(self.args)

    def check(self, found: Problems) -> None:
        """script.argv: one command-line string that shlex can split, and not together with script.args."""
        argv = self.argv
        if argv is None:
            return
        if not isinstance(argv, str):
            found.require(
                False,
                "script.argv",
                argv,
                "Hydra read it as a number, a boolean or a list, not as the "
                "text typed: quote the command line inside the override, 'script.argv=\"--lr 1e-3\"'",
            )
            return
        try:
            shlex.split(argv)
        except ValueError as error:
            found.require(
                False,
                "script.argv",
                argv,
                f"cannot be split into arguments as a shell would ({error}): "
                "close the quote, or escape it with a backslash",
            )
        if self.args:
            found.require(
                False,
                "script.argv",
                argv,
                f"script.args={show(self.args)} is set too: give the "
                "arguments once, either as the list script.args or as the command line script.argv",
            )


@dataclass(frozen=True)
class MonitorConfig:
    """One monitor per node of the job: GPUs (NVML), CPU and memory into MLflow, stragglers and idle GPUs."""

    enabled: bool = True
    """Monitor the job's nodes and GPUs; false = no monitor actors and no system/ metrics."""
    interval_s: float = 5.0
    """Seconds between two samples of a node (at least 0.1); the slow GPU readings (process lists, ECC
    and PCIe counters) are taken about every 30 s, or every sample when the interval is longer."""
    straggler_ratio: float = 1.2
    """Warn about a rank whose median step time over its last 5 reports exceeds the median over ranks by
    more than this factor (must be > 1)."""
    straggler_min_gap_s: float = 0.01
    """A straggler (monitor.straggler_ratio) must also be at least this many seconds per step above the median
    over ranks: differences of a fraction of a millisecond on small CPU jobs are noise, not stragglers."""
    low_util_percent: float = 30.0
    """Warn about a GPU whose mean utilization over its last 6 samples, after 6 warm-up samples from the
    first training step, is below this percentage (0 = never)."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found`."""
        found.at_least("monitor.interval_s", self.interval_s, MIN_MONITOR_INTERVAL_S)
        ratio = self.straggler_ratio
        found.require(
            is_number(ratio) and ratio > 1,
            "monitor.straggler_ratio",
            ratio,
            "must be a number > 1 (a rank this many times slower than the median is a straggler)",
        )
        found.at_least("monitor.straggler_min_gap_s", self.straggler_min_gap_s, 0)
        percent = self.low_util_percent
        found.require(
            is_number(percent) and 0 <= percent <= 100,
            "monitor.low_util_percent",
            percent,
            "must be a percentage in [0, 100] (0 turns the low-utilization warning off)",
        )


@dataclass(frozen=True)
class SweepConfig:
    """A hyperparameter sweep (`orchestrator train -m`): what each trial returns and when one stops early."""

    objective: str = "eval/accuracy"
    """The metric a trial returns to the sweeper (its last reported value) and early stopping compares:
    eval/accuracy, eval/loss, train/loss or train/samples_per_s; for entrypoint=script, any key the script
    reports with orchestrator.report."""
    direction: Direction = "maximize"
    """Whether a higher (maximize) or a lower (minimize) objective is better; hydra/sweeper=optuna optimizes
    in this direction."""
    early_stop: EarlyStop = "none"
    """none; median: stop a trial whose objective at an evaluation is worse than the median of the
    completed trials' values at the same step (recorded KILLED with the tag orchestrator.early_stopped);
    under hydra/sweeper=optuna, median (Optuna's MedianPruner), asha (SuccessiveHalvingPruner) and
    hyperband (HyperbandPruner) prune a trial from its evaluations (status PRUNED, tag orchestrator.pruned).
    asha and hyperband need hydra/sweeper=optuna."""
    early_stop_min_trials: int = 2
    """Completed trials with a value at that step that the median rule needs before it stops a trial
    (under hydra/sweeper=optuna: the MedianPruner's startup trials)."""
    storage: Optional[str] = None
    """hydra/sweeper=optuna: the database that keeps the Optuna study (sqlite:///optuna.db, or a server
    database URL such as postgresql://...); null = in memory, gone when the sweep ends.
    hydra.sweeper.storage follows it. Not MLflow's own SQLite file: both keep their schema version in a
    table named alembic_version."""
    resume: bool = False
    """hydra/sweeper=optuna: continue the study of hydra.sweeper.study_name in sweep.storage instead of
    creating it; its finished trials count toward hydra.sweeper.n_trials."""
    reuse_workers: bool = True
    """hydra/launcher=ray: when a trial ends, its placement group and rank processes (reset to how they
    started: environment, torch settings, random generators, the user's modules) go to the next trial of the
    same shape (workers, resources per worker, spares, runtime_env), which builds only its process group and
    training state anew; false: every trial starts its own."""

    def check(self, found: Problems) -> None:
        """Report what is wrong with this section into `found` (the objective depends on the entrypoint: rules.py)."""
        found.choice("sweep.direction", self.direction, SWEEP_DIRECTIONS)
        found.choice("sweep.early_stop", self.early_stop, EARLY_STOP_RULES)
        found.at_least("sweep.early_stop_min_trials", self.early_stop_min_trials, 1)
        found.require(
            not self.resume or self.storage is not None,
            "sweep.resume",
            self.resume,
            "resuming needs the study's database: set sweep.storage (e.g. sqlite:///optuna.db) to the storage "
            "of the sweep to resume; an in-memory study is gone when its sweep ends",
        )


@dataclass(frozen=True)
class JobConfig:
    """One training job: what runs, where, and how it is recorded."""

    entrypoint: Entrypoint = "builtin"
    """What every worker runs: builtin (the training loop of this config) or script (script.path)."""
    script: ScriptConfig = field(default_factory=ScriptConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ddp: DdpConfig = field(default_factory=DdpConfig)
    fsdp: FsdpConfig = field(default_factory=FsdpConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: Any = MISSING
    """The `model` group option: MlpConfig, CnnConfig, GptConfig or the user's own (TargetModelConfig)."""
    data: Any = MISSING
    """The `data` group option: DigitsConfig, SyntheticConfig, TokensConfig or the user's own (TargetDataConfig)."""
    loss: Any = field(default_factory=lambda: {"_target_": None})
    """The training loss: `loss._target_` names a callable (a class such as torch.nn.CrossEntropyLoss is
    instantiated with the node's other keys, `+loss.label_smoothing=0.1`), called as loss(outputs, targets);
    null = cross-entropy."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    failure: FailureConfig = field(default_factory=FailureConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


MODEL_SCHEMAS = {"mlp": MlpConfig, "cnn": CnnConfig, "gpt": GptConfig}
DIGITS_CLASSES = 10
"""scikit-learn's digits: the ten digits 0-9."""
DIGITS_INPUT_SHAPE = (1, 8, 8)
"""One digit: an 8x8 grey image with one channel."""


def data_input_shape(data: DataConfig) -> tuple[int, ...]:
    """Shape of one input sample of the configured data set."""
    if isinstance(data, SyntheticConfig):
        return tuple(data.input_shape)
    if isinstance(data, TokensConfig):
        return (data.seq_len,)
    return DIGITS_INPUT_SHAPE


def data_num_classes(data: DataConfig) -> int:
    """Number of classes (or the vocabulary size, for tokens) of the configured data set."""
    if isinstance(data, SyntheticConfig):
        return data.num_classes
    if isinstance(data, TokensConfig):
        return data.vocab_size
    return DIGITS_CLASSES


DATA_SCHEMAS = {"digits": DigitsConfig, "synthetic": SyntheticConfig, "tokens": TokensConfig}
