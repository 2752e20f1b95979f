"""The progress line: what it shows and how often it prints without a terminal."""

from __future__ import annotations

import io

from orchestrator.console import Console
from orchestrator.reports import MetricsReport, StepReport


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_progress_line_shows_epoch_step_loss_throughput_and_eta():
    stream, clock = io.StringIO(), Clock()
    console = Console(stream, interactive=True, clock=clock)
    console.on_step(StepReport(0, 10, 100, 0, 0.1, 10))
    console.on_metrics(MetricsReport(20, {"train/loss": 0.5, "train/samples_per_s": 1234.0}))
    clock.now += 10
    console.on_step(StepReport(0, 20, 100, 1, 0.1, 10))
    last = stream.getvalue().split("\r\033[K")[-1]
    assert last == "epoch 2 | step 20/100 | loss 0.5000 | 1,234 samples/s | ETA 0:01:20"


def test_without_a_terminal_lines_are_sparse_and_the_last_step_always_prints():
    stream, clock = io.StringIO(), Clock()
    console = Console(stream, interactive=False, clock=clock)
    for step in range(1, 50):
        clock.now += 0.1
        console.on_step(StepReport(0, step, 50, 0, 0.1, 1))
    console.on_step(StepReport(1, 50, 50, 0, 0.1, 1))  # other ranks never draw
    console.on_step(StepReport(0, 50, 50, 0, 0.1, 1))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[-1].startswith("epoch 1 | step 50/50")
