"""The overhead benchmark's workload: a plain torchrun-style DDP script (no orchestrator import).

A 1.3M-parameter MLP (256 -> 1024 -> 1024 -> 10) trained with AdamW on fixed synthetic tensors, global
batch 256 (each rank takes its share of every global batch), 300 steps, gloo, one thread per rank.
`train_loop(config)` is the whole training; `main()` reads torchrun's variables, so the same function
runs under torchrun, `orchestrator train entrypoint=script`, and Ray Train's TorchTrainer (which
creates the process group itself).

Rank 0 writes its timings to --result as JSON: `first_step_at` (time.time() when the first optimizer
step finished), `steady_samples_per_s` (samples of steps 61..300 over rank 0's wall time for them:
the last 80% of the steps), `end_at`. Every launcher is measured by these same lines.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

INPUT_FEATURES, HIDDEN, CLASSES = 256, 1024, 10
GLOBAL_BATCH = 256
STEPS = 300
WARMUP_STEPS = STEPS // 5
"""Steps left out of the steady-state rate: the first 20%."""
NUM_SAMPLES = GLOBAL_BATCH * STEPS
"""One pass over the data: no epoch boundary in the run."""
SEED = 0


def build_model() -> torch.nn.Module:
    """The benchmark MLP: 1,323,018 parameters."""
    return torch.nn.Sequential(
        torch.nn.Linear(INPUT_FEATURES, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, CLASSES),
    )


def train_loop(config: dict) -> None:
    """Train on this rank; rank 0 writes the timings to config["result"]."""
    torch.set_num_threads(1)
    if not dist.is_initialized():  # torchrun and the orchestrator leave it to the script; Ray Train does not
        dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    per_rank = GLOBAL_BATCH // world_size
    generator = torch.Generator().manual_seed(SEED)
    inputs = torch.randn(NUM_SAMPLES, INPUT_FEATURES, generator=generator)
    labels = torch.randint(0, CLASSES, (NUM_SAMPLES,), generator=generator)
    order = torch.randperm(NUM_SAMPLES, generator=generator)
    torch.manual_seed(SEED)
    model = DistributedDataParallel(build_model())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first_step_at = steady_from = None
    for step in range(1, STEPS + 1):
        batch = order[(step - 1) * GLOBAL_BATCH + rank * per_rank :][:per_rank]
        loss = torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step == 1:
            first_step_at = time.time()
        if step == WARMUP_STEPS:
            steady_from = time.perf_counter()
    steady_s = time.perf_counter() - steady_from
    if rank == 0:
        with open(config["result"], "w") as handle:
            json.dump(
                {
                    "first_step_at": first_step_at,
                    "end_at": time.time(),
                    "final_loss": loss.item(),
                    "steady_samples_per_s": (STEPS - WARMUP_STEPS) * GLOBAL_BATCH / steady_s,
                },
                handle,
            )
    if "RAY_TRAIN" not in config:  # Ray Train destroys the group it made
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True, help="where rank 0 writes its timings (JSON)")
    args = parser.parse_args()
    train_loop({"result": args.result})


if __name__ == "__main__":
    main()
