"""Tokens/s and MFU of the gpt config on one GPU: fp32 vs bf16, compile off vs on, orchestrator vs a bare loop.

MFU = model FLOPs/s (orchestrator.train.flops: 6N + attention per token) over the bf16 peak measured
in the same run by a large matmul. "orchestrator" is the built-in loop exactly as a rank runs it
(build_trainer: DDP wrapper in a one-rank process group, the straggler timer's comm hook, the logging
window, reports); Ray and MLflow only start and end a job, so they are left out. "bare" is the same
model, data, optimizer and precision in a plain loop. Both rates are tokens over the steps after the
warm-up, timed at synchronised log steps.

    python benchmarks/bench_gpu.py                          # the default size, on cuda:0
    python benchmarks/bench_gpu.py --layers 24 --width 1024 --heads 16 --batch 8
    python benchmarks/bench_gpu.py --device cpu --tiny --compile off   # a smoke test without a GPU
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch._dynamo  # noqa: E402

from orchestrator.config.schema import (  # noqa: E402
    CheckpointConfig,
    GptConfig,
    JobConfig,
    OptimConfig,
    TokensConfig,
    TrackingConfig,
    TrainerConfig,
)
from orchestrator.train.flops import training_flops_per_token  # noqa: E402

LOG_EVERY = 10
AMP = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}
"""--precision values and the trainer.amp each one trains with (fp16 with a GradScaler in both runners)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="a tiny model and few steps (a smoke test)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=50304)
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run (a multiple of 10)")
    parser.add_argument("--warmup-steps", type=int, default=20, help="steps left out of the rate (compilation)")
    parser.add_argument("--precision", default="fp32,bf16", help=f"comma-separated, of {', '.join(AMP)}")
    parser.add_argument("--compile", default="off,on")
    parser.add_argument("--runners", default="bare,orchestrator")
    args = parser.parse_args()
    if args.tiny:
        args.layers, args.heads, args.width, args.context, args.vocab = 2, 2, 64, 64, 256
        args.batch, args.steps, args.warmup_steps = 8, 30, 10
    unknown = [value for value in args.precision.split(",") if value not in AMP]
    if unknown:
        parser.error(f"--precision {','.join(unknown)} is not valid: use {', '.join(AMP)}")
    if args.steps % LOG_EVERY or args.warmup_steps % LOG_EVERY or args.warmup_steps >= args.steps:
        parser.error(f"--steps and --warmup-steps must be multiples of {LOG_EVERY}, warm-up below steps")
    return args


def require_device(device: str) -> torch.device:
    """The device to measure on; exits with what to do when CUDA was asked for and is not there."""
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit(
            f"bench_gpu.py: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False). "
            "Run it on a GPU machine with a CUDA build of torch, or smoke-test it on CPU: "
            "--device cpu --tiny --compile off"
        )
    return torch.device(device, 0) if device == "cuda" else torch.device("cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bf16_tflops(device: torch.device, size: int) -> float:
    """Best of ten timed bf16 matmuls of size^3 (after warm-up): the peak MFU is measured against."""
    left, right = (torch.randn(size, size, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        left @ right
    best = float("inf")
    for _ in range(10):
        synchronize(device)
        started = time.perf_counter()
        left @ right
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e12


def job_config(args, precision: str, compile_on: bool, checkpoint_dir: str) -> JobConfig:
    """The gpt job both runners train: one pass over fresh synthetic token sequences."""
    sequences = (args.steps + 1) * args.batch
    return JobConfig(
        model=GptConfig(layers=args.layers, heads=args.heads, width=args.width, context=args.context),
        data=TokensConfig(
            num_sequences=int(sequences / 0.95) + 1,
            seq_len=args.context,
            vocab_size=args.vocab,
            batch_size=args.batch,
            test_fraction=0.05,
        ),
        trainer=TrainerConfig(
            max_steps=args.steps, log_every_n_steps=LOG_EVERY, amp=AMP[precision], compile=compile_on
        ),
        optim=OptimConfig(lr=3e-4, schedule="constant"),
        tracking=TrackingConfig(enabled=False),
        checkpoint=CheckpointConfig(dir=checkpoint_dir),
    )


def rate(windows: list[tuple[int, float]], warmup_steps: int, tokens_per_step: int) -> float:
    """Tokens/s over the log windows (end step, seconds) that start after the warm-up."""
    kept = [(step, seconds) for step, seconds in windows if step > warmup_steps]
    return len(kept) * LOG_EVERY * tokens_per_step / sum(seconds for _, seconds in kept)


def run_bare(job: JobConfig, device: torch.device, args) -> float:
    """The same model, data, optimizer and autocast in a plain loop; tokens/s after the warm-up."""
    from orchestrator.train.data import load_dataset
    from orchestrator.train.evaluate import token_loss
    from orchestrator.train.models import build_model
    from orchestrator.train.precision import autocast, grad_scaler

    torch.manual_seed(job.trainer.seed)
    dataset = load_dataset(job.data, job.trainer.seed)
    inputs, labels = dataset.train_x.to(device), dataset.train_y.to(device)
    model = build_model(job.model, dataset.input_shape, dataset.num_classes).to(device)
    step_model = torch.compile(model) if job.trainer.compile else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=job.optim.lr)
    scaler = grad_scaler(device, job.trainer.amp)  # a no-op unless fp16
    windows, started = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = slice((step - 1) * args.batch, step * args.batch)
        with autocast(device, job.trainer.amp):
            loss = token_loss(step_model(inputs[batch]), labels[batch])
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if step % LOG_EVERY == 0:
            loss.item()  # the loop's log step syncs the same way (its all_reduce result is read on the host)
            windows.append((step, time.perf_counter() - started))
            started = time.perf_counter()
    return rate(windows, args.warmup_steps, args.batch * args.context)


def run_orchestrator(job: JobConfig, device: torch.device, args) -> tuple[float, float]:
    """The built-in loop as one rank runs it: tokens/s after the warm-up as timed here, and as the loop reported it.

    The bench's clock is read as each log step's report arrives: the loop reports after the step's
    results reached the host, so the device's queued work is in the time, as in the bare loop.
    """
    import os

    from orchestrator.lifecycle.rank_reports import MetricsReport
    from orchestrator.planning.rank_specs import WorkerSpec
    from orchestrator.train.loop import TrainContext, train
    from orchestrator.worker.ddp import process_group

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(probe.getsockname()[1]))
    backend = "nccl" if device.type == "cuda" else "gloo"
    spec = WorkerSpec(
        world_rank=0,
        local_rank=0,
        node_rank=0,
        world_size=1,
        local_world_size=1,
        bundle_index=0,
        node_id="bench",
        node_ip="127.0.0.1",
        backend=backend,
        torch_threads=torch.get_num_threads(),
        env={},
        cuda_device=device.index,
    )
    reports: list = []
    arrivals: list[tuple[int, float]] = []

    def emit(report) -> None:
        if isinstance(report, MetricsReport) and "train/tokens_per_s" in report.metrics:
            arrivals.append((report.step, time.perf_counter()))
            reports.append(report)

    with process_group(spec, device, timeout_s=600):
        context = TrainContext(
            spec=spec, device=device, emit=emit, stop_requested=lambda: False, checkpoint_dir=Path(job.checkpoint.dir)
        )
        train(job, context)
    tokens_per_step = args.batch * args.context
    timed = [(step, seconds - previous) for (_, previous), (step, seconds) in zip(arrivals, arrivals[1:])]
    reported = [(report.step, LOG_EVERY * tokens_per_step / report.metrics["train/tokens_per_s"]) for report in reports]
    return rate(timed, args.warmup_steps, tokens_per_step), rate(reported, args.warmup_steps, tokens_per_step)


def main() -> int:
    args = parse_args()
    device = require_device(args.device)
    peak = peak_bf16_tflops(device, 256 if args.tiny else 8192)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}; torch {torch.__version__}; measured bf16 matmul peak {peak:,.4g} TFLOP/s", flush=True)
    runners = {"bare": run_bare, "orchestrator": run_orchestrator}
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        for precision in args.precision.split(","):
            for compile_on in [mode == "on" for mode in args.compile.split(",")]:
                for runner in args.runners.split(","):
                    job = job_config(args, precision, compile_on, scratch)
                    measured = runners[runner](job, device, args)
                    tokens_per_s, reported = measured if isinstance(measured, tuple) else (measured, None)
                    flops = tokens_per_s * training_flops_per_token(job.model, args.vocab, args.context)
                    rows[(precision, compile_on, runner)] = tokens_per_s
                    print(
                        f"{runner:12s} {precision:5s} compile {'on ' if compile_on else 'off'} "
                        f"{tokens_per_s:12,.0f} tokens/s  {flops / 1e12:8.3g} TFLOP/s  MFU {flops / 1e12 / peak:6.1%}"
                        + (
                            f"  (the loop reported {reported:,.0f}: {reported / tokens_per_s:.3f}x)" if reported else ""
                        ),
                        flush=True,
                    )
                    torch._dynamo.reset()  # each configuration compiles afresh
    print(
        f"\ngpt: layers={args.layers} heads={args.heads} width={args.width} context={args.context} "
        f"vocab={args.vocab}, batch {args.batch} sequences, {args.steps} steps ({args.warmup_steps} warm-up)"
    )
    for (precision, compile_on, runner), tokens_per_s in rows.items():
        bare = rows.get((precision, compile_on, "bare"))
        if runner == "orchestrator" and bare:
            print(f"orchestrator/bare {precision} compile {'on' if compile_on else 'off'}: {tokens_per_s / bare:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
