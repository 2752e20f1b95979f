"""How long a rank takes to reach gradient synchronisation: the straggler signal DDP does not hide.

Under DDP every rank's optimizer step lasts about as long as the slowest rank's, because the fast
ones wait inside the gradient all-reduce. What differs is the time from the start of a step until
the rank's first gradient bucket is ready to be all-reduced (forward, and backward up to that
bucket): a DDP communication hook marks that moment and then runs DDP's default all-reduce.

On CPU the host clock measures it. On CUDA the host runs ahead of the GPU, so CUDA events recorded
on the current stream are used instead and read once they have completed.
"""

from __future__ import annotations

import time
from typing import Optional

import torch
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

MAX_PENDING = 1024
"""CUDA event pairs kept while waiting for the GPU to pass them (older ones are dropped)."""


class SyncTimer:
    """Times each optimizer step from `step_started()` to the rank's first all-reduce bucket."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        # the step's start: perf_counter seconds on CPU, a CUDA event on CUDA (the other stays None)
        self._started_s: Optional[float] = None
        self._started_event: Optional[torch.cuda.Event] = None
        self._reached = True
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # CUDA (start, reached) event pairs
        self._seconds: list[float] = []

    def attach(self, model: DistributedDataParallel) -> None:
        """Register the timing communication hook on `model` (before its first forward); until then nothing is measured."""
        model.register_comm_hook(state=None, hook=self._hook)

    def step_started(self) -> None:
        """An optimizer step begins (before the forward of its first micro-batch)."""
        if self.cuda:
            self._started_event = _recorded_event()
        else:
            self._started_s = time.perf_counter()
        self._reached = False

    def take_mean(self) -> Optional[float]:
        """Mean seconds to reach synchronisation over the steps measured since the last call; None if none."""
        while self._pending and self._pending[0][1].query():
            start, reached = self._pending.pop(0)
            self._seconds.append(start.elapsed_time(reached) / 1000.0)  # CUDA events measure milliseconds
        if not self._seconds:
            return None
        mean = sum(self._seconds) / len(self._seconds)
        self._seconds = []
        return mean

    def _hook(self, process_group, bucket):
        # type: (Optional[torch.distributed.ProcessGroup], torch.distributed.GradBucket) -> torch.futures.Future[torch.Tensor]
        # (a type comment: DDP's register_comm_hook checks the annotations of `bucket` and of the return at run
        # time, and this module's postponed annotations would be strings it rejects)
        # called once per bucket on the step that syncs (micro-batches under no_sync() never get here);
        # `process_group` is the hook's state: None, DDP's default group
        if not self._reached and self._started_event is not None:
            self._reached = True
            self._pending.append((self._started_event, _recorded_event()))
            del self._pending[:-MAX_PENDING]
        elif not self._reached and self._started_s is not None:
            self._reached = True
            self._seconds.append(time.perf_counter() - self._started_s)
        # the hook takes None for the default group, which its stubs do not say
        return allreduce_hook(process_group, bucket)  # type: ignore[arg-type]


def _recorded_event() -> torch.cuda.Event:
    """A timing CUDA event recorded on the current stream."""
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event
