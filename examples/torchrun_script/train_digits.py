"""A torchrun-style DDP script that uses the orchestrator API: metrics, checkpoints, restarts.

Runs unchanged under the orchestrator, under plain torchrun, and as one process:

    orchestrator train entrypoint=script script.path=examples/torchrun_script/train_digits.py
    torchrun --standalone --nproc_per_node=2 examples/torchrun_script/train_digits.py
    python examples/torchrun_script/train_digits.py

It trains an MLP on scikit-learn's digits (bundled, nothing is downloaded), each rank taking its share
of every global batch. Rank 0 reports the loss (averaged over the ranks) every 10 steps and the eval
accuracy at the end of every epoch; a checkpoint is saved every --checkpoint-every steps, and a
restarted or resumed run continues from the newest one (orchestrator.load_checkpoint()).
"""

import argparse
import atexit
import os
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import orchestrator


def digits(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train inputs, train labels, eval inputs, eval labels): the 1,797 digits, every 5th for eval."""
    from sklearn.datasets import load_digits

    data = load_digits()
    inputs = torch.tensor(data.data, dtype=torch.float32) / 16.0
    labels = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    evaluation, train = order[::5], torch.cat([order[index::5] for index in range(1, 5)])
    return inputs[train], labels[train], inputs[evaluation], labels[evaluation]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, over all ranks")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--checkpoint-every", type=int, default=50)
    args = parser.parse_args()
    distributed = "RANK" in os.environ  # torchrun or the orchestrator; else one plain process
    if distributed:
        dist.init_process_group("gloo")
    where = orchestrator.context()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    model = DistributedDataParallel(net) if distributed else net
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    train_x, train_y, eval_x, eval_y = digits(seed=0)
    steps_per_epoch = len(train_y) // args.batch_size
    per_rank = args.batch_size // where.world_size

    step = 0
    state = orchestrator.load_checkpoint()
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        print(f"rank {where.world_rank}: resuming at step {step} (restart {where.restart_count})", flush=True)

    while step < args.epochs * steps_per_epoch:
        epoch, index = divmod(step, steps_per_epoch)
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(epoch))
        batch = order[index * args.batch_size + where.world_rank * per_rank :][:per_rank]
        loss = torch.nn.functional.cross_entropy(model(train_x[batch]), train_y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 10 == 0:
            mean = loss.detach().clone()
            if distributed:
                dist.all_reduce(mean)
            orchestrator.report({"train/loss": mean.item() / where.world_size}, step)
        if step % steps_per_epoch == 0 and where.world_rank == 0:  # only rank 0's reports are recorded
            with torch.no_grad():
                accuracy = (net(eval_x).argmax(dim=-1) == eval_y).float().mean().item()
            orchestrator.report({"eval/accuracy": accuracy, "epoch": step // steps_per_epoch}, step)
        if step % args.checkpoint_every == 0:
            orchestrator.save_checkpoint(
                {"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step}, step
            )
    if distributed:
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
