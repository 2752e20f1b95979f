"""The straggler signal: time from a step's start until the rank's first gradient bucket is ready."""

from __future__ import annotations

import contextlib
import socket
import time

import torch

# DDP imports torch._dynamo, which sets TORCHINDUCTOR_CACHE_DIR; importing it at collection keeps that
# library side effect out of the leak check's per-test environment comparison
import torch._dynamo  # noqa: F401
from torch.nn.parallel import DistributedDataParallel

from orchestrator.train.timing import SyncTimer
from orchestrator.worker.ddp import process_group
from tests.helpers import worker_spec

FORWARD_S = 0.03
AFTER_SYNC_S = 0.5


class SlowForward(torch.nn.Module):
    """A linear layer whose forward takes FORWARD_S longer: planted compute before the gradients exist."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)

    def forward(self, inputs):
        time.sleep(FORWARD_S)
        return self.linear(inputs)


def _one_rank_group(monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    return process_group(worker_spec(), torch.device("cpu"), timeout_s=60)


def test_reach_sync_covers_every_micro_batch_before_the_all_reduce_and_nothing_after_it(monkeypatch):
    torch.manual_seed(0)
    inputs = torch.randn(8, 4)
    with _one_rank_group(monkeypatch):
        model = DistributedDataParallel(SlowForward())
        plain = SlowForward()
        plain.load_state_dict(model.module.state_dict())
        timer = SyncTimer(torch.device("cpu"))
        timer.attach(model)
        assert timer.take_mean() is None
        for micro_batches in (1, 3):
            timer.step_started()
            for index in range(micro_batches):
                last = index == micro_batches - 1
                with contextlib.nullcontext() if last else model.no_sync():
                    model(inputs).sum().backward()
            time.sleep(AFTER_SYNC_S)  # work after the all-reduce (the optimizer) is not part of the signal
            reached = timer.take_mean()
            assert micro_batches * FORWARD_S <= reached < micro_batches * FORWARD_S + AFTER_SYNC_S * 0.8
            assert timer.take_mean() is None
        for _ in range(1 + 3):  # DDP's gradients accumulated over both steps (never zeroed)
            plain(inputs).sum().backward()
        # the hook still runs DDP's own all-reduce: the gradients are exactly the single-process ones
        for ours, reference in zip(model.module.parameters(), plain.parameters()):
            torch.testing.assert_close(ours.grad, reference.grad, rtol=0, atol=0)
