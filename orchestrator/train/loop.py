"""The built-in DDP training loop of one rank.

Nothing here waits on the driver: reports go out through `emit`, which only enqueues. The ranks
agree on stopping early through the same all_reduce that averages the logged loss, so a stop
request costs no extra collective and every rank stops at the same step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union, cast

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from orchestrator.config.export import flat_params
from orchestrator.config.schema import (
    DdpConfig,
    GptConfig,
    JobConfig,
    TargetDataConfig,
    TargetModelConfig,
    TrainerConfig,
)
from orchestrator.lifecycle.rank_reports import (
    AttemptStartReport,
    CheckpointReport,
    MetricsReport,
    ResultReport,
    StepReport,
)
from orchestrator.lifecycle.resume import model_data_identity
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.train.checkpoint import CheckpointWriter, load_checkpoint, snapshot
from orchestrator.train.components import build_loss, build_target_data, build_target_model, training_flops_per_sample
from orchestrator.train.data import Dataset, ShardedBatches, load_dataset, to_device
from orchestrator.train.evaluate import evaluate
from orchestrator.train.flops import training_flops_per_token
from orchestrator.train.loader import LoaderBatches, batch_size_of, evaluate_dataset, first_inputs
from orchestrator.train.models import build_model
from orchestrator.train.optim import build_optimizer, build_scheduler
from orchestrator.train.precision import autocast, grad_scaler, set_tf32
from orchestrator.train.rng import capture_rng, restore_rng, seed_everything
from orchestrator.train.step import Step, build_step, scalar_metrics
from orchestrator.train.timing import SyncTimer

HEARTBEAT_INTERVAL_S = 1.0
"""A rank between log steps still sends a StepReport this often, so the driver sees it alive."""


@dataclass
class WorkerCache:
    """What a worker process keeps between attempts of a job: the data set and the built model.

    A rank whose process survived a failure resumes without reloading data or rebuilding the model;
    the checkpoint then overwrites every parameter, so the result is the same as in a new process.
    """

    key: tuple = ()
    dataset: Union[Dataset, UserData, None] = None
    """A built-in Dataset (tensors) or the user's UserData."""
    flops_per_sample: Optional[float] = None
    """Measured once per process for the user's model (rank 0 reports it)."""
    module: Optional[torch.nn.Module] = None
    wrapper: Optional[weakref.ref[DistributedDataParallel]] = None
    """The DDP wrapper of the previous attempt: the module is only reused once that wrapper is gone."""

    def reusable_module(self) -> Optional[torch.nn.Module]:
        """The cached module, cleaned for a new attempt, or None if it cannot be proven clean.

        A failed attempt can leave partial gradients on the parameters, and a DDP wrapper that is still
        alive keeps its reducer's autograd hooks on them: both would silently change the next steps.
        """
        if self.module is None:
            return None
        if self.wrapper is not None and self.wrapper() is not None:
            gc.collect()  # the failed attempt's frames may hold the wrapper in a reference cycle
            if self.wrapper() is not None:
                return None
        for parameter in self.module.parameters():
            parameter.grad = None
        return self.module.train()


@dataclass(frozen=True)
class UserData:
    """The user's map-style data sets (data._target_)."""

    train: Any
    eval: Optional[Any]


@dataclass(frozen=True)
class TrainContext:
    """What the worker hands the loop: who this rank is and how it talks to the driver."""

    spec: WorkerSpec
    device: torch.device
    emit: Callable[[object], None]
    stop_requested: Callable[[], bool]
    checkpoint_dir: Path
    resume_from: Optional[Path] = None
    cache: WorkerCache = field(default_factory=WorkerCache)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds already spent by the worker in this attempt (process_group), extended by the loop."""


def total_steps(trainer: TrainerConfig, steps_per_epoch: int) -> int:
    """Optimizer steps the job runs: max_steps when set, else max_epochs whole epochs."""
    return trainer.max_steps if trainer.max_steps is not None else trainer.max_epochs * steps_per_epoch


def train(job: JobConfig, ctx: TrainContext) -> ResultReport:
    """Train this rank to the configured end, or to a stop all ranks agreed on."""
    trainer = build_trainer(job, ctx)
    try:
        return trainer.fit()
    finally:
        trainer.writer.close()
        if isinstance(trainer.batches, LoaderBatches):
            trainer.batches.close()


def build_trainer(job: JobConfig, ctx: TrainContext) -> "Trainer":
    """Data, model (identical on every rank), DDP wrapper, optimizer, schedule, scaler; resumed if asked."""
    started = time.perf_counter()
    spec, seed = ctx.spec, job.trainer.seed
    set_tf32(ctx.device, job.trainer.tf32)
    seed_everything(seed)
    dataset, module = _data_and_model(job, ctx)
    step = build_step(job.trainer.step_fn, build_loss(job.loss))
    if isinstance(dataset, UserData):
        _measure_flops(job, ctx, dataset, module, step)
    seed_everything(seed + 1 + spec.world_rank)  # per-rank randomness (dropout) after the shared init
    if isinstance(dataset, UserData):
        batches: Any = LoaderBatches(
            dataset.train,
            spec.world_size,
            spec.world_rank,
            job.data.batch_size,
            job.trainer.grad_accum_steps,
            seed,
            job.data.num_workers,
            ctx.device,
        )
    else:
        batches = ShardedBatches(
            dataset.train_x,
            dataset.train_y,
            spec.world_size,
            spec.world_rank,
            job.data.batch_size,
            job.trainer.grad_accum_steps,
            seed,
        )
    model = wrap_ddp(compiled(module, job.trainer), ctx.device, job.ddp)
    ctx.cache.wrapper = weakref.ref(model)
    optimizer = build_optimizer(job.optim, module.parameters())
    steps = total_steps(job.trainer, batches.steps_per_epoch)
    trainer = Trainer(
        job,
        ctx,
        dataset,
        batches,
        model,
        module,
        optimizer,
        build_scheduler(job.optim, optimizer, steps),
        grad_scaler(ctx.device, job.trainer.amp),
        steps,
        step,
    )
    trainer.sync_timer.attach(model)  # each rank's time to reach gradient sync: the straggler signal
    ctx.timings["build"] = time.perf_counter() - started
    if ctx.resume_from is not None:
        loaded = time.perf_counter()
        try:
            trainer.restore(load_checkpoint(ctx.resume_from))
        except Exception as error:  # the same file fails the same way on every restart: say so, never retry
            from orchestrator.errors import CheckpointLoadError

            raise CheckpointLoadError(
                f"checkpoint {ctx.resume_from} does not load into this job: {type(error).__name__}: {error}"
            ) from error
        ctx.timings["checkpoint_load"] = time.perf_counter() - loaded
    return trainer


def wrap_ddp(module: torch.nn.Module, device: torch.device, ddp: DdpConfig) -> DistributedDataParallel:
    """The DDP wrapper with the `ddp` config's bucket size, bucket views, static graph and unused-parameter search."""
    return DistributedDataParallel(
        module,
        device_ids=[device.index] if device.type == "cuda" else None,
        bucket_cap_mb=ddp.bucket_cap_mb,
        gradient_as_bucket_view=ddp.gradient_as_bucket_view,
        static_graph=ddp.static_graph,
        find_unused_parameters=ddp.find_unused_parameters,
    )


def compiled(module: torch.nn.Module, trainer: TrainerConfig) -> torch.nn.Module:
    """`module` under torch.compile when trainer.compile (the parameters stay the module's own), else `module`.

    DDP wraps the compiled module, not the other way round: compiling the DDP wrapper (which would let
    TorchDynamo split the graph at bucket boundaries) compiles nothing for modules whose forward is
    torch.nn's own, such as nn.Sequential (torch 2.13 skips those frames inside DDP's forward). The
    price: a compiled backward hands DDP all gradients at its end, so all-reduces do not overlap it.
    """
    if not trainer.compile:
        return module
    # torch.compile of a Module returns an OptimizedModule (a Module); its stubs say only a callable
    return cast(torch.nn.Module, torch.compile(module, mode=trainer.compile_mode))


def _data_and_model(job: JobConfig, ctx: TrainContext) -> tuple[Union[Dataset, UserData], torch.nn.Module]:
    cache = ctx.cache
    key = (repr(job.data), repr(job.model), job.trainer.seed, str(ctx.device))
    dataset = cache.dataset
    if cache.key != key or dataset is None:  # None: an earlier attempt set the key but failed to build the data
        cache.key, cache.module, cache.flops_per_sample = key, None, None
        if isinstance(job.data, TargetDataConfig):
            dataset = UserData(*build_target_data(job.data))
        else:
            dataset = _on_device(load_dataset(job.data, job.trainer.seed), ctx.device)
        cache.dataset = dataset
    # a fresh start builds a fresh model (its init must match a new process); a resume overwrites it
    module = cache.reusable_module() if ctx.resume_from is not None else None
    if module is None:
        if isinstance(job.model, TargetModelConfig):
            module = build_target_model(job.model).to(ctx.device)
        elif isinstance(dataset, UserData):  # validation rejects this pair; a JobConfig built by hand may not
            from orchestrator.errors import ConfigError

            raise ConfigError(
                [
                    f"model={job.model.name}: a built-in model is sized for a built-in data set; "
                    "set model._target_ to your model"
                ]
            )
        else:
            module = build_model(job.model, dataset.input_shape, dataset.num_classes).to(ctx.device)
        cache.module = module
    return dataset, module


def _measure_flops(job: JobConfig, ctx: TrainContext, data: UserData, module: torch.nn.Module, step: Step) -> None:
    """Rank 0 counts the model's training FLOPs per sample once per process, on one micro-batch."""
    if ctx.spec.world_rank != 0 or ctx.cache.flops_per_sample is not None:
        return
    from torch.utils.data import default_collate

    from orchestrator.train.loader import to_device

    count = min(job.data.batch_size, len(data.train))
    batch = to_device(default_collate([data.train[index] for index in range(count)]), ctx.device)
    ctx.cache.flops_per_sample = training_flops_per_sample(module, batch, step)


def _on_device(dataset: Dataset, device: torch.device) -> Dataset:
    if device.type == "cpu":
        return dataset
    # the whole in-memory set moves to the device once, so steps index it there without copies
    tensors = {name: to_device(getattr(dataset, name), device) for name in ("train_x", "train_y", "test_x", "test_y")}
    return Dataset(**tensors, input_shape=dataset.input_shape, num_classes=dataset.num_classes)


class _Window:
    """Loss, samples and time accumulated since the last log step (tensors: no per-step sync)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self, started: Optional[float] = None) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.metric_sums: dict[str, torch.Tensor] = {}
        """trainer.step_fn's own metrics, summed over micro-batches."""
        self.micro_batches = 0
        self.samples = 0
        self.steps = 0
        self.started = time.perf_counter() if started is None else started

    def add_metrics(self, metrics: dict[str, torch.Tensor]) -> None:
        for key, value in metrics.items():
            self.metric_sums[key] = self.metric_sums[key] + value if key in self.metric_sums else value

    def state(self) -> dict[str, Any]:
        """The sums so far: a resumed run logs the same mean loss at the next log step."""
        return {
            "loss_sum": self.loss_sum.item(),
            "micro_batches": self.micro_batches,
            "samples": self.samples,
            "steps": self.steps,
            "metric_sums": {key: value.item() for key, value in self.metric_sums.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.reset()
        self.loss_sum += state["loss_sum"]
        self.micro_batches, self.samples, self.steps = state["micro_batches"], state["samples"], state["steps"]
        self.add_metrics(
            {
                key: torch.tensor(value, dtype=torch.float64, device=self.device)
                for key, value in state.get("metric_sums", {}).items()
            }
        )


class Trainer:
    """Runs optimizer steps, logging, checkpoints and evaluation for one rank."""

    def __init__(
        self,
        job: JobConfig,
        ctx: TrainContext,
        dataset: Union[Dataset, UserData],
        batches: Union[LoaderBatches, ShardedBatches],
        model: DistributedDataParallel,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        scaler: torch.amp.GradScaler,
        steps: int,
        step: Step,
    ):
        self.job, self.ctx, self.dataset, self.batches = job, ctx, dataset, batches
        self.model, self.optimizer, self.scheduler, self.scaler = model, optimizer, scheduler, scaler
        self.module = module
        """The plain model inside DDP (and torch.compile): its state_dict names are the checkpoint's and MLflow's."""
        self.total_steps = steps
        self.step = self.epoch = self.steps_in_epoch = 0
        self.resumed_step = 0
        self.window = _Window(ctx.device)
        self.last_heartbeat = time.monotonic()
        self.eval_metrics: dict[str, float] = {}
        self.evaluated_at = self.checkpointed_at = -1
        self.step_fn = step
        self.metric_keys: Optional[list[str]] = None
        """The keys trainer.step_fn returned at its first step: every step must return the same (the ranks
        all-reduce them side by side)."""
        self.writer = CheckpointWriter(ctx.checkpoint_dir, job.checkpoint.keep_last, self._checkpoint_done)
        self.sync_timer = SyncTimer(ctx.device)

    def fit(self) -> ResultReport:
        """Run epochs until the last step; returns this rank's result."""
        while self.step < self.total_steps:
            for micro_batches in self.batches.epoch(self.epoch, skip_steps=self.steps_in_epoch):
                self._optimizer_step(micro_batches)
                if self.step == self.resumed_step + 1:
                    self._attempt_started()
                if self._after_step():
                    return self._finish(stopped=True)
                if self.step >= self.total_steps:
                    break
            if self.steps_in_epoch >= self.batches.steps_per_epoch:
                self._end_epoch()
        return self._finish(stopped=False)

    def _optimizer_step(self, micro_batches: list[Any]) -> None:
        amp = self.job.trainer.amp
        self.sync_timer.step_started()
        for index, batch in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            # gradients are all-reduced once per optimizer step, on its last micro-batch
            sync = contextlib.nullcontext() if last else self.model.no_sync()
            with sync:
                with autocast(self.ctx.device, amp):
                    loss, metrics = self.step_fn.train(self.model, batch)
                self.scaler.scale(loss / len(micro_batches)).backward()
            self.window.loss_sum += loss.detach().double()
            self.window.samples += batch_size_of(batch)
            if metrics or self.metric_keys:
                self.window.add_metrics(self._step_metrics(metrics))
        self.window.micro_batches += len(micro_batches)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.steps_in_epoch += 1
        self.window.steps += 1

    def _step_metrics(self, metrics: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        values = scalar_metrics(metrics, self.step_fn)
        keys = sorted(values)
        if self.metric_keys is None:
            self.metric_keys = keys
        elif keys != self.metric_keys:
            from orchestrator.errors import ConfigError

            raise ConfigError(
                [
                    f"trainer.step_fn={self.step_fn.user} is not valid: it returned the metrics "
                    f"{keys} at step {self.step + 1} after {self.metric_keys} before; return the same "
                    "keys at every step"
                ]
            )
        return {key: value.to(self.ctx.device) for key, value in values.items()}

    def _attempt_started(self) -> None:
        if self.ctx.device.type == "cuda":  # once per attempt: the first step's time is the device's, not the queue's
            torch.cuda.synchronize(self.ctx.device)
        self.ctx.timings["first_step"] = time.perf_counter() - self.window.started
        self.ctx.emit(
            AttemptStartReport(
                world_rank=self.ctx.spec.world_rank,
                resumed_step=self.resumed_step,
                timings=dict(self.ctx.timings),
                wall_time=time.time(),
            )
        )

    def _after_step(self) -> bool:
        """Log, heartbeat and checkpoint as due; True when the ranks agreed to stop here."""
        trainer, stop = self.job.trainer, False
        if self.step % trainer.log_every_n_steps == 0 or self.step == self.total_steps:
            stop = self._log()
        elif time.monotonic() - self.last_heartbeat >= HEARTBEAT_INTERVAL_S:
            self._heartbeat(time.perf_counter() - self.window.started)
        every = self.job.checkpoint.every_n_steps
        if stop or (every and self.step % every == 0):
            self._checkpoint()
        return stop

    def _log(self) -> bool:
        """All-reduce the window's loss, samples and stop votes; rank 0 reports; True = stop."""
        vote = 1.0 if self.ctx.stop_requested() else 0.0
        values = [float(self.window.micro_batches), float(self.window.samples), vote]
        keys = self.metric_keys or []
        zero = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        totals = torch.cat(
            [
                self.window.loss_sum.reshape(1),
                torch.tensor(values, dtype=torch.float64, device=self.ctx.device),
                torch.stack([self.window.metric_sums.get(key, zero) for key in keys] or [zero]),
            ]
        )
        if self.ctx.spec.world_size > 1:
            dist.all_reduce(totals)
        loss_sum, micro_batches, samples, votes, *metric_sums = totals.tolist()
        own = {f"train/{key}": total / micro_batches for key, total in zip(keys, metric_sums)}
        # read only now: on a GPU the host queues steps ahead of the device, and tolist() waits for them, so
        # a clock read before it would leave the queued steps' time out of every window and overstate the rate
        ended = time.perf_counter()
        elapsed = ended - self.window.started
        if self.ctx.spec.world_rank == 0:
            self.ctx.emit(
                MetricsReport(
                    step=self.step,
                    metrics={
                        "train/loss": loss_sum / micro_batches,
                        "train/samples_per_s": samples / elapsed,
                        **token_metrics(self.job, samples / elapsed, self.ctx.spec.world_size),
                        **model_flops_metrics(
                            self.job, samples / elapsed, self.ctx.spec.world_size, self.ctx.cache.flops_per_sample
                        ),
                        "train/lr": float(self.scheduler.get_last_lr()[0]),  # a float lr (typed as float or tensor)
                        "train/epoch": float(self.epoch),
                        **own,
                    },
                )
            )
        self._heartbeat(elapsed)
        self.window.reset(started=ended)  # the report's own time belongs to the next window
        return votes > 0

    def _heartbeat(self, elapsed: float) -> None:
        steps = max(self.window.steps, 1)
        self.ctx.emit(
            StepReport(
                world_rank=self.ctx.spec.world_rank,
                step=self.step,
                total_steps=self.total_steps,
                epoch=self.epoch,
                step_time_s=elapsed / steps,
                steps_timed=self.window.steps,
                reach_sync_s=self.sync_timer.take_mean(),
            )
        )
        self.last_heartbeat = time.monotonic()

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.steps_in_epoch = 0
        if self.epoch % self.job.trainer.eval_every_n_epochs == 0:
            self._evaluate()
        self._checkpoint()

    def _evaluate(self) -> None:
        spec = self.ctx.spec
        if isinstance(self.dataset, UserData):
            if self.dataset.eval is None:
                return
            self.eval_metrics = evaluate_dataset(
                self.module,
                self.dataset.eval,
                self.step_fn,
                spec.world_rank,
                spec.world_size,
                self.job.data.batch_size,
                self.job.trainer.amp,
                self.ctx.device,
            )
        else:
            self.eval_metrics = evaluate(
                self.module,
                self.dataset.test_x,
                self.dataset.test_y,
                spec.world_rank,
                spec.world_size,
                self.job.data.batch_size,
                self.job.trainer.amp,
            )
        self.evaluated_at = self.step
        if spec.world_rank == 0:
            self.ctx.emit(MetricsReport(step=self.step, metrics=self.eval_metrics))

    def _checkpoint(self) -> None:
        """Every rank hands over its RNG states; rank 0 snapshots everything and writes in the background."""
        if self.checkpointed_at == self.step:
            return
        self.checkpointed_at = self.step
        spec = self.ctx.spec
        # rank 0 gathers every rank's RNG states into its list; the other ranks only send theirs
        states: Optional[list[Optional[dict[str, Any]]]] = [None] * spec.world_size if spec.world_rank == 0 else None
        if spec.world_size > 1:
            dist.gather_object(capture_rng(), states, dst=0)
        elif states is not None:
            states[0] = capture_rng()
        if states is not None:  # rank 0, which gathered every rank's states
            self.writer.submit(self._state(states), self.step)

    def _state(self, rng_states: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        return {
            "model": snapshot(self.module.state_dict()),
            "optimizer": snapshot(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "steps_in_epoch": self.steps_in_epoch,
            "window": self.window.state(),
            "rng": rng_states,
            "world_size": self.ctx.spec.world_size,
            # what the driver compares with a job that resumes from this checkpoint, before it starts
            "config": model_data_identity(flat_params(self.job)),
        }

    def _checkpoint_done(self, step: int, path: Path) -> None:
        self.ctx.emit(CheckpointReport(step=step, path=str(path)))

    def restore(self, state: dict[str, Any]) -> None:
        """Continue exactly where the checkpoint's run stopped (weights, optimizer, data position, RNG)."""
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.steps_in_epoch = state["step"], state["epoch"], state["steps_in_epoch"]
        self.resumed_step = self.checkpointed_at = self.step
        self.window.restore(state["window"])
        rng = state["rng"]
        if self.ctx.spec.world_rank < len(rng):
            restore_rng(rng[self.ctx.spec.world_rank])
        else:  # the world grew: a new rank has no saved stream, give it a distinct reproducible one
            seed_everything(self.job.trainer.seed + 1 + self.ctx.spec.world_rank + self.step)

    def _finish(self, stopped: bool) -> ResultReport:
        if not stopped and self.evaluated_at != self.step:
            self._evaluate()
        self._checkpoint()  # the end state is always on disk (a no-op when this step is saved already)
        self.writer.wait()
        weights = {name: tensor.detach().cpu() for name, tensor in self.module.state_dict().items()}
        result = ResultReport(
            world_rank=self.ctx.spec.world_rank,
            step=self.step,
            stopped=stopped,
            metrics=self.eval_metrics,
            params_digest=state_digest(weights),
        )
        if self.ctx.spec.world_rank != 0:
            return result
        return dataclasses.replace(result, model_state=weights, input_example=self._input_example())

    def _input_example(self) -> Any:
        """A few inputs for the logged model's signature (numpy, as MLflow takes them)."""
        if not isinstance(self.dataset, UserData):
            return self.dataset.test_x[:4].cpu().numpy()
        inputs = first_inputs(self.dataset.eval if self.dataset.eval is not None else self.dataset.train)
        return inputs.numpy() if isinstance(inputs, torch.Tensor) else None


def token_metrics(job: JobConfig, samples_per_s: float, world_size: int) -> dict[str, float]:
    """For model=gpt: tokens/s, model TFLOP/s (6N + attention per token) and, with trainer.peak_tflops, MFU."""
    if not isinstance(job.model, GptConfig):
        return {}
    seq_len = job.data.seq_len
    tokens_per_s = samples_per_s * seq_len
    tflops = tokens_per_s * training_flops_per_token(job.model, job.data.vocab_size, seq_len) / 1e12
    metrics = {"train/tokens_per_s": tokens_per_s, "train/model_tflops": tflops}
    if job.trainer.peak_tflops is not None:
        metrics["train/mfu"] = tflops / (job.trainer.peak_tflops * world_size)
    return metrics


def model_flops_metrics(
    job: JobConfig, samples_per_s: float, world_size: int, flops_per_sample: Optional[float]
) -> dict[str, float]:
    """For the user's model: model TFLOP/s of all ranks from the FLOPs torch counted per sample and, with
    trainer.peak_tflops, MFU."""
    if flops_per_sample is None:
        return {}
    tflops = samples_per_s * flops_per_sample / 1e12
    metrics = {"train/model_tflops": tflops}
    if job.trainer.peak_tflops is not None:
        metrics["train/mfu"] = tflops / (job.trainer.peak_tflops * world_size)
    return metrics


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes: equal digests = bit-identical weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()
