"""Typed job configuration: the frozen dataclasses Hydra composes and every module reads.

Each field carries a docstring; docs/configuration.md lists every key with its default, generated from
those docstrings by config/reference.py. Choice fields are plain strings so that `validate()` (not OmegaConf) rejects a bad value with a message
that names the key, the value and the valid choices.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

MISSING = "???"
"""OmegaConf's marker of a value that must be given (its own `omegaconf.MISSING` is this string): the
schema stays free of OmegaConf, and Hydra still refuses to run with the value unset."""

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
BACKENDS = ("auto", "nccl", "gloo")
AMP_MODES = ("none", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("constant", "cosine")
MODEL_FORMATS = ("pt2", "pickle")
ENTRYPOINTS = ("builtin", "script")
RESTART_ON = ("any", "infra_only")
SWEEP_DIRECTIONS = ("maximize", "minimize")
EARLY_STOP_RULES = ("none", "median")
SWEEP_OBJECTIVES = ("eval/accuracy", "eval/loss", "train/loss", "train/samples_per_s")
"""Metrics the built-in loop reports that a sweep can optimize."""
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


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


@dataclass(frozen=True)
class ScalingConfig:
    """How many workers, with what resources, placed how."""

    num_workers: int = 2
    """Number of DDP workers (ranks), one Ray actor each."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per worker; also the worker's torch thread count (at least 1)."""
    gpus_per_worker: float = 0.0
    """GPUs per worker; 0 = CPU training."""
    placement_strategy: str = "PACK"
    """Ray placement group strategy: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD."""
    backend: str = "auto"
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


@dataclass(frozen=True)
class TrainerConfig:
    """The training loop."""

    max_epochs: int = 4
    """Epochs to train when max_steps is null."""
    max_steps: Optional[int] = None
    """Optimizer steps to train; null = train by epochs."""
    seed: int = 0
    """Seed for model init, data split and shuffling; the same seed gives the same run."""
    amp: str = "none"
    """Mixed precision: none, bf16 (autocast) or fp16 (autocast + GradScaler)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step (gradients sync only on the last)."""
    log_every_n_steps: int = 10
    """Log train/loss and train/samples_per_s every this many optimizer steps."""
    eval_every_n_epochs: int = 1
    """Evaluate on the test split every this many epochs (and always at the end)."""
    resume: Optional[str] = None
    """Continue a stopped or failed run into the same MLflow run: latest, a checkpoint file or run
    checkpoint directory, or an MLflow run id; null = start fresh."""
    compile: bool = False
    """Compile the model with torch.compile, inside DDP (on CPU this needs a C++ compiler; the first steps compile)."""
    compile_mode: str = "default"
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


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: str = "adamw"
    """Optimizer: sgd or adamw."""
    lr: float = 0.003
    """Peak learning rate."""
    weight_decay: float = 0.0
    """Weight decay."""
    momentum: float = 0.9
    """SGD momentum (sgd only)."""
    schedule: str = "cosine"
    """Learning-rate schedule after warm-up: constant or cosine (decays to 0 at the last step)."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0 to lr."""


@dataclass(frozen=True)
class ModelConfig:
    """Base of the `model` group; `name` selects the architecture."""

    name: str = MISSING
    """Architecture; set by the group option (mlp, cnn, gpt)."""


@dataclass(frozen=True)
class MlpConfig(ModelConfig):
    """A multi-layer perceptron over the flattened input."""

    name: str = "mlp"
    hidden_sizes: List[int] = field(default_factory=lambda: [128, 128])
    """Width of each hidden layer."""
    dropout: float = 0.0
    """Dropout after each hidden layer."""


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
    model_format: str = "pt2"
    """Serialization of the logged model: pt2 (torch.export, MLflow 3's default) or pickle."""
    max_outage_s: float = 300.0
    """While the tracking store is unreachable, metrics are buffered and retried with backoff for up to this
    long; older ones are dropped (the console says which) and training goes on."""
    flush_timeout_s: float = 30.0
    """Longest wait at the end of the run for buffered metrics to reach the store; what is left is dropped
    and reported."""


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints written by rank 0."""

    dir: str = "checkpoints"
    """Directory for checkpoints (one sub-folder per run); must be shared storage across nodes."""
    every_n_steps: Optional[int] = None
    """Also checkpoint every this many optimizer steps; null = only at each epoch end."""
    keep_last: int = 2
    """Complete checkpoints kept per run; older ones are deleted."""
    upload: bool = False
    """Also store each complete checkpoint in the run's MLflow artifacts (under checkpoints/)."""


@dataclass(frozen=True)
class FailureConfig:
    """What happens when a worker dies, hangs or raises."""

    max_restarts: int = 3
    """Restarts from the newest checkpoint before the job fails; -1 = no limit."""
    restart_on: str = "any"
    """any (worker deaths, hangs and exceptions in user code) or infra_only (not exceptions)."""
    hang_timeout_s: float = 300.0
    """A rank that finishes no optimizer step for this long is treated as failed."""
    retry_script_errors: bool = False
    """entrypoint=script: also restart a script that exited with an error status. By default that fails the
    job at once, as under torchrun (a bad argument fails the same way every time); a script killed by a
    signal (the OOM killer's SIGKILL) is restarted like any worker that died."""


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

    def arguments(self) -> list[str]:
        """What the script gets as sys.argv[1:]: script.argv split as a shell would, else script.args."""
        return shlex.split(self.argv) if isinstance(self.argv, str) else list(self.args)


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


@dataclass(frozen=True)
class SweepConfig:
    """A hyperparameter sweep (`orchestrator train -m`): what each trial returns and when one stops early."""

    objective: str = "eval/accuracy"
    """The metric a trial returns to the sweeper (its last reported value) and early stopping compares:
    eval/accuracy, eval/loss, train/loss or train/samples_per_s; for entrypoint=script, any key the script
    reports with orchestrator.report."""
    direction: str = "maximize"
    """Whether a higher (maximize) or a lower (minimize) objective is better; hydra/sweeper=optuna optimizes
    in this direction."""
    early_stop: str = "none"
    """none, or median: stop a trial whose objective at an evaluation is worse than the median of the
    completed trials' values at the same step (recorded KILLED with the tag orchestrator.early_stopped)."""
    early_stop_min_trials: int = 2
    """Completed trials with a value at that step that the median rule needs before it stops a trial."""


@dataclass(frozen=True)
class JobConfig:
    """One training job: what runs, where, and how it is recorded."""

    entrypoint: str = "builtin"
    """What every worker runs: builtin (the training loop of this config) or script (script.path)."""
    script: ScriptConfig = field(default_factory=ScriptConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    ddp: DdpConfig = field(default_factory=DdpConfig)
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
