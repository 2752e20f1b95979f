"""The built-in training loop of one rank (DDP or FSDP).

Nothing here waits on the driver: reports go out through `emit`, which only enqueues. The ranks
agree on stopping early through the same all_reduce that averages the logged loss, so a stop
request costs no extra collective and every rank stops at the same step.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from orchestrator.config.export import flat_params
from orchestrator.config.schema import (
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
from orchestrator.train.checkpoint import is_sharded, load_checkpoint
from orchestrator.train.components import build_loss, build_target_data, build_target_model, training_flops_per_sample
from orchestrator.train.data import Dataset, RankShare, ShardedBatches, StepBatches, load_dataset, to_device
from orchestrator.train.evaluate import evaluate
from orchestrator.train.flops import training_flops_per_token
from orchestrator.train.loader import LoaderBatches, batch_size_of, evaluate_dataset, first_inputs
from orchestrator.train.memory import PER_RANK_LIMIT, memory_metrics, model_state_bytes, peak_bytes
from orchestrator.train.models import build_model
from orchestrator.train.optim import build_optimizer, build_scheduler
from orchestrator.train.parallel import Parallel, broadcast_from_rank0, wrap
from orchestrator.train.precision import autocast, grad_scaler, set_tf32
from orchestrator.train.rng import capture_rng, restore_rng, seed_everything
from orchestrator.train.sharded_checkpoint import (
    ShardedCheckpointer,
    load_model_and_optimizer,
    model_and_optimizer_state,
    read_trainer_state,
)
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
    """The DDP wrapper of the previous attempt: the module is only reused once that wrapper is gone (an FSDP
    module is never cached: sharding rebuilt it in place for that attempt's group)."""

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


def total_steps(trainer: TrainerConfig, batches: RankShare, resumed: Optional[Mapping[str, Any]] = None) -> int:
    """Optimizer steps the job runs: max_steps when set, else to the end of max_epochs epochs, counted from
    where `resumed` (a checkpoint's loop state) stopped, in this world's steps."""
    if trainer.max_steps is not None:
        return trainer.max_steps
    if resumed is None:
        return trainer.max_epochs * batches.steps_per_epoch
    epoch = resumed["epoch"]
    rest_of_epoch = batches.steps_from(epoch_position(resumed, batches))
    return resumed["step"] + rest_of_epoch + (trainer.max_epochs - epoch - 1) * batches.steps_per_epoch


def epoch_position(state: Mapping[str, Any], batches: RankShare) -> int:
    """A checkpoint's global position in its epoch, in samples (older checkpoints counted steps of the same
    world size and batch)."""
    if "samples_in_epoch" in state:
        return int(state["samples_in_epoch"])
    world_size = int(state.get("world_size", batches.world_size))
    return int(state["steps_in_epoch"]) * world_size * batches.batch_size * batches.accum_steps


def global_batch(job: JobConfig, world_size: int) -> int:
    """Samples per optimizer step over all ranks on `world_size` ranks: an elastic job with
    scaling.elastic_batch=keep_global keeps the batch of scaling.num_workers ranks on any world size; otherwise
    each rank keeps its batch (a fixed-size job always runs num_workers ranks, except when a test or a user
    resumes its checkpoint on another world size by hand, which has always kept each rank's batch)."""
    per_rank = job.data.batch_size * job.trainer.grad_accum_steps
    if job.scaling.elastic and job.scaling.elastic_batch == "keep_global":
        return per_rank * job.scaling.num_workers
    return per_rank * world_size


def train(job: JobConfig, ctx: TrainContext) -> ResultReport:
    """Train this rank to the configured end, or to a stop all ranks agreed on."""
    trainer = build_trainer(job, ctx)
    failed = True
    try:
        result = trainer.fit()
        failed = False
        return result
    finally:
        try:
            trainer.checkpointer.close(quiet=failed)  # on a failure, its error must not hide the first one
        finally:
            if isinstance(trainer.batches, LoaderBatches):
                trainer.batches.close()


def build_trainer(job: JobConfig, ctx: TrainContext) -> "Trainer":
    """Data, model (identical on every rank), DDP or FSDP, optimizer, schedule, scaler; resumed if asked."""
    started = time.perf_counter()
    resumed = _resumed_loop_state(ctx.resume_from)
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
            global_batch(job, spec.world_size),
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
            global_batch(job, spec.world_size),
        )
    parallel = wrap(module, job, ctx.device, spec.world_size)
    if parallel.ddp is not None:
        ctx.cache.wrapper = weakref.ref(parallel.ddp)
    else:
        ctx.cache.module = None
    optimizer = build_optimizer(job.optim, module.parameters())
    steps = total_steps(job.trainer, batches, resumed)
    trainer = Trainer(
        job,
        ctx,
        dataset,
        batches,
        parallel,
        optimizer,
        build_scheduler(job.optim, optimizer, steps),
        grad_scaler(ctx.device, job.trainer.amp),
        steps,
        step,
    )
    if parallel.ddp is not None:  # each rank's time to reach gradient sync: the straggler signal
        trainer.sync_timer.attach(parallel.ddp)
    ctx.timings["build"] = time.perf_counter() - started
    if ctx.resume_from is not None and resumed is not None:
        loaded = time.perf_counter()
        try:
            trainer.load(ctx.resume_from, resumed)
        except Exception as error:  # the same file fails the same way on every restart: say so, never retry
            from orchestrator.errors import CheckpointLoadError

            raise CheckpointLoadError(
                f"checkpoint {ctx.resume_from} does not load into this job: {type(error).__name__}: {error}"
            ) from error
        ctx.timings["checkpoint_load"] = time.perf_counter() - loaded
    return trainer


def _resumed_loop_state(path: Optional[Path]) -> Optional[dict[str, Any]]:
    """The loop's state in the checkpoint to resume from (read before the schedule, which depends on it)."""
    if path is None:
        return None
    try:
        return read_trainer_state(path) if is_sharded(path) else load_checkpoint(path)
    except Exception as error:
        from orchestrator.errors import CheckpointLoadError

        raise CheckpointLoadError(
            f"checkpoint {path} does not load into this job: {type(error).__name__}: {error}"
        ) from error


def prepare_data(job: JobConfig, cache: WorkerCache, device: torch.device) -> Union[Dataset, UserData]:
    """The job's data set, built into `cache` unless it holds it already: what an attempt does first, and what a
    hot spare does ahead of its attempt (for a CPU job), so that it takes over a rank without building it."""
    key = (repr(job.data), repr(job.model), job.trainer.seed, str(device))
    dataset = cache.dataset
    if cache.key != key or dataset is None:  # None: an earlier attempt set the key but failed to build the data
        cache.key, cache.module, cache.flops_per_sample = key, None, None
        if isinstance(job.data, TargetDataConfig):
            dataset = UserData(*build_target_data(job.data))
        else:
            dataset = _on_device(load_dataset(job.data, job.trainer.seed), device)
        cache.dataset = dataset
    return dataset


def _data_and_model(job: JobConfig, ctx: TrainContext) -> tuple[Union[Dataset, UserData], torch.nn.Module]:
    cache = ctx.cache
    dataset = prepare_data(job, cache, ctx.device)
    # a fresh start builds a fresh model (its init must match a new process); a resume overwrites it
    reusable = ctx.resume_from is not None and job.scaling.strategy == "ddp"
    module = cache.reusable_module() if reusable else None
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
        parallel: Parallel,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        scaler: torch.amp.GradScaler,
        steps: int,
        step: Step,
    ):
        self.job, self.ctx, self.dataset, self.batches = job, ctx, dataset, batches
        self.parallel, self.optimizer, self.scheduler, self.scaler = parallel, optimizer, scheduler, scaler
        self.module = parallel.module
        """The plain model inside DDP (and torch.compile), or the FSDP-sharded one: its parameter names are the
        checkpoint's and MLflow's."""
        # under FSDP bf16 is its MixedPrecisionPolicy's, not autocast's
        self.autocast_amp = "none" if parallel.strategy == "fsdp" else job.trainer.amp
        self.total_steps = steps
        self.step = self.epoch = 0
        self.epoch_start = 0
        """Global samples of this epoch taken before this pass over it (non-zero after a mid-epoch resume)."""
        self.pass_steps = 0
        """Optimizer steps since `epoch_start`."""
        self.resumed_step = 0
        self.window = _Window(ctx.device)
        self.last_heartbeat = time.monotonic()
        self.eval_metrics: dict[str, float] = {}
        self.evaluated_at = self.checkpointed_at = -1
        self.step_fn = step
        self.metric_keys: Optional[list[str]] = None
        """The keys trainer.step_fn returned at its first step: every step must return the same (the ranks
        all-reduce them side by side)."""
        self.checkpointer = ShardedCheckpointer(
            ctx.checkpoint_dir,
            job.checkpoint.keep_last,
            job.checkpoint.async_save,
            ctx.spec.world_rank,
            job.scaling.rendezvous_timeout_s,
            self._checkpoint_done,
        )
        self.sync_timer = SyncTimer(ctx.device)

    @property
    def samples_in_epoch(self) -> int:
        """The global position in the current epoch: samples taken from its order by all ranks."""
        return self.batches.position_after(self.epoch_start, self.pass_steps)

    def fit(self) -> ResultReport:
        """Run epochs until the last step; returns this rank's result."""
        while self.step < self.total_steps:
            for step_batches in self.batches.epoch(self.epoch, start=self.epoch_start):
                self._optimizer_step(step_batches)
                if self.step == self.resumed_step + 1:
                    self._attempt_started()
                if self._after_step():
                    return self._finish(stopped=True)
                if self.step >= self.total_steps:
                    break
            if self.pass_steps >= self.batches.steps_from(self.epoch_start):
                self._end_epoch()
        return self._finish(stopped=False)

    def _optimizer_step(self, step: StepBatches) -> None:
        amp = self.autocast_amp
        self.sync_timer.step_started()
        micro_batches = step.micro_batches
        for index, batch in enumerate(micro_batches):
            last = index == len(micro_batches) - 1
            # gradients are all-reduced (reduce-scattered under FSDP) once per optimizer step, on its last micro-batch
            with self.parallel.gradient_sync(last):
                with autocast(self.ctx.device, amp):
                    loss, metrics = self.step_fn.train(self.parallel.model, batch)
                self.scaler.scale(step.weighted(loss, index)).backward()
            if not step.counts(index):
                continue
            self.window.loss_sum += loss.detach().double()
            self.window.samples += batch_size_of(batch)
            self.window.micro_batches += 1
            if metrics or self.metric_keys:
                self.window.add_metrics(self._step_metrics(metrics))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.pass_steps += 1
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
        if self.ctx.spec.world_rank == 0:  # the run shows the world size from the step where it took effect
            self.ctx.emit(
                MetricsReport(
                    step=self.resumed_step,
                    metrics={
                        "scaling/world_size": float(self.ctx.spec.world_size),
                        "scaling/global_batch": float(self.batches.global_step_samples),
                    },
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
        spec = self.ctx.spec
        zero = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        memory = [peak_bytes(self.ctx.device), model_state_bytes(self.module, self.optimizer)]
        # every rank's memory rides in the same all-reduce: each fills its own slots of a zeroed vector
        per_rank = torch.zeros(2 * spec.world_size if spec.world_size <= PER_RANK_LIMIT else 0, dtype=torch.float64)
        per_rank[2 * spec.world_rank : 2 * spec.world_rank + 2] = torch.tensor(memory, dtype=torch.float64)
        totals = torch.cat(
            [
                self.window.loss_sum.reshape(1),
                torch.tensor(values, dtype=torch.float64, device=self.ctx.device),
                torch.stack([self.window.metric_sums.get(key, zero) for key in keys] or [zero]),
                per_rank.to(self.ctx.device),
            ]
        )
        if spec.world_size > 1:
            dist.all_reduce(totals)
        loss_sum, micro_batches, samples, votes, *rest = totals.tolist()
        metric_sums, memory_slots = rest[: max(len(keys), 1)], rest[max(len(keys), 1) :]
        own = {f"train/{key}": total / micro_batches for key, total in zip(keys, metric_sums)}
        memory_report = self._memory_metrics(memory, memory_slots)
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
                        **memory_report,
                    },
                )
            )
        self._heartbeat(elapsed)
        self.window.reset(started=ended)  # the report's own time belongs to the next window
        return votes > 0

    def _memory_metrics(self, own: list[float], slots: list[float]) -> dict[str, float]:
        if slots:
            return memory_metrics(slots[0::2], slots[1::2])
        # too many ranks for a metric each: the largest, in a reduction of its own (log steps only)
        largest = torch.tensor(own, dtype=torch.float64, device=self.ctx.device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        peak, state = largest.tolist()
        return memory_metrics([peak], [state], per_rank=False)

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
        self.epoch_start = self.pass_steps = 0
        if self.epoch % self.job.trainer.eval_every_n_epochs == 0:
            self._evaluate()
        self._checkpoint()

    def _evaluate(self) -> None:
        spec = self.ctx.spec
        # FSDP gathers parameters in every forward: each rank must run as many as the others
        lockstep = self.parallel.strategy == "fsdp"
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
                self.autocast_amp,
                self.ctx.device,
                lockstep=lockstep,
            )
        else:
            self.eval_metrics = evaluate(
                self.module,
                self.dataset.test_x,
                self.dataset.test_y,
                spec.world_rank,
                spec.world_size,
                self.job.data.batch_size,
                self.autocast_amp,
                lockstep=lockstep,
            )
        self.evaluated_at = self.step
        if spec.world_rank == 0:
            self.ctx.emit(MetricsReport(step=self.step, metrics=self.eval_metrics))

    def _checkpoint(self) -> None:
        """Rank 0 gathers every rank's RNG states; every rank hands its part of the model and optimizer to DCP,
        which writes in the background (checkpoint.async_save). Rank 0 reports how long the loop was held."""
        if self.checkpointed_at == self.step:
            return
        self.checkpointed_at = self.step
        started = time.perf_counter()
        spec = self.ctx.spec
        # rank 0 gathers every rank's RNG states into its list; the other ranks only send theirs
        states: Optional[list[Optional[dict[str, Any]]]] = [None] * spec.world_size if spec.world_rank == 0 else None
        if spec.world_size > 1:
            dist.gather_object(capture_rng(), states, dst=0)
        elif states is not None:
            states[0] = capture_rng()
        loop_state = self._loop_state(states) if states is not None else None
        meta = self._meta() if spec.world_rank == 0 else {}
        self.checkpointer.save(self.step, model_and_optimizer_state(self.module, self.optimizer), loop_state, meta)
        if spec.world_rank == 0:
            blocked = time.perf_counter() - started
            self.ctx.emit(MetricsReport(step=self.step, metrics={"checkpoint/blocked_s": blocked}))

    def _loop_state(self, rng_states: list[Optional[dict[str, Any]]]) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "samples_in_epoch": self.samples_in_epoch,
            "window": self.window.state(),
            "rng": rng_states,
            "world_size": self.ctx.spec.world_size,
            "global_batch": self.batches.global_step_samples,
            "strategy": self.parallel.strategy,
        }

    def _meta(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "world_size": self.ctx.spec.world_size,
            "strategy": self.parallel.strategy,
            # what the driver compares with a job that resumes from this checkpoint, before it starts
            "config": model_data_identity(flat_params(self.job)),
        }

    def _checkpoint_done(self, step: int, path: Path, written_s: float) -> None:
        self.ctx.emit(MetricsReport(step=step, metrics={"checkpoint/write_s": written_s}))
        self.ctx.emit(CheckpointReport(step=step, path=str(path)))

    def load(self, path: Path, loop_state: dict[str, Any]) -> None:
        """Continue exactly where the checkpoint at `path` stopped (weights, optimizer, data position, RNG);
        `loop_state` is its loop state, already read."""
        if is_sharded(path):
            load_model_and_optimizer(path, self.module, self.optimizer)
        elif self.parallel.strategy == "fsdp":
            raise ValueError(
                "it is a single-file checkpoint from before sharded checkpoints, which scaling.strategy=fsdp "
                "cannot shard: resume it with scaling.strategy=ddp, whose next checkpoints FSDP can load"
            )
        else:
            self.module.load_state_dict(loop_state["model"])
            self.optimizer.load_state_dict(loop_state["optimizer"])
        self.restore(loop_state)

    def restore(self, state: Mapping[str, Any]) -> None:
        """Take the loop's own state (schedule, scaler, position, log window, RNG) from a checkpoint's."""
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.epoch_start, self.pass_steps = epoch_position(state, self.batches), 0
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
        self.checkpointer.wait()
        weights = self.parallel.full_weights()  # under FSDP a collective: rank 0 gets the whole model
        if self.parallel.strategy == "fsdp":  # no replicas to compare: every rank reports the whole model's digest
            digest = broadcast_from_rank0(state_digest(weights) if self.ctx.spec.world_rank == 0 else "")
        else:
            digest = state_digest(weights)
        result = ResultReport(
            world_rank=self.ctx.spec.world_rank,
            step=self.step,
            stopped=stopped,
            metrics=self.eval_metrics,
            params_digest=digest,
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
