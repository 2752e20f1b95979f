"""The console log keeps what the job's Console wrote, one line per drawing, and passes everything on."""

from __future__ import annotations

import io

from orchestrator.console import Console
from orchestrator.metrics.console_log import captured
from orchestrator.reports import MetricsReport, StepReport


def _step(step: int) -> StepReport:
    return StepReport(world_rank=0, step=step, total_steps=20, epoch=0, step_time_s=0.01, steps_timed=10)


def test_a_terminal_progress_line_becomes_one_log_line_per_drawing_and_the_stream_is_restored():
    terminal = io.StringIO()
    console = Console(terminal, interactive=True, clock=iter(range(100)).__next__)
    with captured(console) as log:
        console.on_metrics(MetricsReport(step=10, metrics={"train/loss": 0.5, "train/samples_per_s": 1000.0}))
        console.on_step(_step(10))
        console.message("MLflow: cannot write metrics (ConnectionRefusedError)")
        console.on_step(_step(20))
        log.extend(["run FINISHED in 1.0 s after 20 steps"])
    assert console.stream is terminal
    assert "\r\x1b[K" in terminal.getvalue()  # the terminal still got its redraws
    assert log.text().splitlines() == [
        "epoch 1 | step 10/20 | loss 0.5000 | 1,000 samples/s",
        "MLflow: cannot write metrics (ConnectionRefusedError)",
        "epoch 1 | step 20/20 | loss 0.5000 | 1,000 samples/s | ETA 0:00:00",
        "run FINISHED in 1.0 s after 20 steps",
    ]
