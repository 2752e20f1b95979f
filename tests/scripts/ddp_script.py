"""A plain torchrun-style DDP script: no orchestrator import, reads torchrun's variables itself.

Trains a small MLP on fixed synthetic data for --steps steps with each rank taking its share of
every global batch, then rank 0 saves the weights to --out. Every rank writes the environment it saw
to <--out>.rank<R>.json so tests can check what the launcher gave it. --fail-rank makes that rank
exit with code 3 after the first step.
"""

import argparse
import json
import os
import socket

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

ENV_KEYS = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "GLOO_SOCKET_IFNAME",
    "CUDA_VISIBLE_DEVICES",
    "NCCL_DEBUG",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", required=True)
    parser.add_argument("--fail-rank", type=int, default=-1)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    seen = {key: os.environ.get(key) for key in ENV_KEYS}
    seen["hostname_ip"] = socket.gethostbyname(socket.gethostname())
    with open(f"{args.out}.rank{rank}.json", "w") as handle:
        json.dump(seen, handle)
    torch.manual_seed(0)
    model = DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(1)
    inputs, labels = torch.randn(512, 16, generator=generator), torch.randint(0, 4, (512,), generator=generator)
    per_rank = 32 // world
    for step in range(args.steps):
        start = (step * 32 + rank * per_rank) % 512
        loss = torch.nn.functional.cross_entropy(
            model(inputs[start : start + per_rank]), labels[start : start + per_rank]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if rank == args.fail_rank:
            print(f"rank {rank} fails on purpose", flush=True)
            raise SystemExit(3)
    if rank == 0:
        torch.save(model.module.state_dict(), args.out)
    print(f"rank {rank} finished {args.steps} steps, loss {loss.item():.4f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
