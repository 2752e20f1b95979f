"""The progress line: what it shows and how often it prints without a terminal."""

from __future__ import annotations

import io

from orchestrator.cli.console import Console
from orchestrator.lifecycle.rank_reports import LogReport, MetricsReport, StepReport


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


def test_a_scripts_progress_bar_is_redrawn_in_place_and_ended_by_its_last_drawing_or_another_line():
    err, out = io.StringIO(), io.StringIO()
    console = Console(err, interactive=True, out=out)
    for percent in (10, 50):
        console.on_log(LogReport(world_rank=0, stream="stderr", line=f"{percent}%", redrawn=True))
    console.on_log(LogReport(world_rank=1, stream="stdout", line="rank 1 says hi"))  # interrupts: the bar ends
    console.on_log(LogReport(world_rank=0, stream="stderr", line="80%", redrawn=True))
    console.on_log(LogReport(world_rank=0, stream="stderr", line="100%"))
    assert err.getvalue() == "[rank 0] 10%\r\033[K[rank 0] 50%\n[rank 0] 80%\r\033[K[rank 0] 100%\n"
    assert out.getvalue() == "[rank 1] rank 1 says hi\n"
    console.on_log(LogReport(world_rank=1, stream="stdout", line="step 3", redrawn=True))
    console.message("warning: rank 1 is slow")
    console.close()
    assert out.getvalue().endswith("[rank 1] step 3\n") and err.getvalue().endswith("warning: rank 1 is slow\n")


def test_a_scripts_reports_draw_a_line_of_the_latest_values_sparse_without_a_terminal():
    clock = [0.0]
    stream = io.StringIO()
    console = Console(stream, interactive=False, clock=lambda: clock[0])
    console.on_script_metrics(MetricsReport(step=10, metrics={"train/loss": 0.5}))
    clock[0] = 5.0
    console.on_script_metrics(MetricsReport(step=20, metrics={"train/loss": 0.25}))  # within 10 s: not printed
    clock[0] = 11.0
    console.on_script_metrics(MetricsReport(step=22, metrics={"eval/accuracy": 0.9}))
    assert stream.getvalue().splitlines() == [
        "step 10 | train/loss 0.5",
        "step 22 | train/loss 0.25 | eval/accuracy 0.9",
    ]
