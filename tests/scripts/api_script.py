"""A torchrun-style DDP script that uses the orchestrator API: it reports, checkpoints and resumes.

Trains a small MLP (SGD with momentum, so the optimizer's state matters) on fixed synthetic data for
--steps steps, each rank taking its share of every global batch. Rank 0 reports `train/loss` (averaged
over the ranks) at every step and the script checkpoints every --every steps; at the start it continues
from orchestrator.load_checkpoint() when there is one. At the end rank 0 saves the weights to --out.
--step-s S makes every step take at least S seconds (a slower model). --kill-once MARKER --kill-at N --kill-rank R: rank R SIGKILLs itself after step N (as the OOM killer
would), unless MARKER exists (it creates MARKER first).
"""

import argparse
import atexit
import os
import signal
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import orchestrator

GLOBAL_BATCH = 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--step-s", type=float, default=0.0)
    parser.add_argument("--kill-once")
    parser.add_argument("--kill-at", type=int, default=-1)
    parser.add_argument("--kill-rank", type=int, default=1)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    where = orchestrator.context()
    assert (where.world_rank, where.world_size) == (dist.get_rank(), dist.get_world_size())
    torch.manual_seed(0)
    model = DistributedDataParallel(
        torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    start = 0
    state = orchestrator.load_checkpoint()
    if state is not None:
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    print(f"rank {where.world_rank} starts at step {start} (restart {where.restart_count})", flush=True)
    generator = torch.Generator().manual_seed(1)
    inputs, labels = torch.randn(512, 16, generator=generator), torch.randint(0, 4, (512,), generator=generator)
    per_rank = GLOBAL_BATCH // where.world_size
    for step in range(start + 1, args.steps + 1):
        first = ((step - 1) * GLOBAL_BATCH + where.world_rank * per_rank) % 512
        loss = torch.nn.functional.cross_entropy(
            model(inputs[first : first + per_rank]), labels[first : first + per_rank]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        time.sleep(args.step_s)
        mean = loss.detach().clone()
        dist.all_reduce(mean)
        orchestrator.report({"train/loss": mean / where.world_size}, step)
        if step % args.every == 0:
            orchestrator.save_checkpoint(
                {"model": model.module.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, step
            )
        if (
            args.kill_once
            and step == args.kill_at
            and where.world_rank == args.kill_rank
            and not os.path.exists(args.kill_once)
        ):
            open(args.kill_once, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
    if where.world_rank == 0:
        torch.save(model.module.state_dict(), args.out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # With torch 2.13 on Python before 3.14, a gloo thread that lets go of a tensor after the interpreter
    # began its teardown aborts the process ("terminate called without an active exception", SIGABRT:
    # pytorch/pytorch#190489), 4 runs in 90 here when an all_reduce came just before the end.
    # This script leaves nothing open, so it ends as `exit` would but without the teardown: the exit
    # handlers first (the orchestrator's last reports), then the streams (docs/your-code.md).
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
