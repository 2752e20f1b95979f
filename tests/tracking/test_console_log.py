"""The console log keeps what the job's Console wrote (a redrawn line in its final state) and passes everything on."""

from __future__ import annotations

import io

from orchestrator.cli.console import Console
from orchestrator.lifecycle.rank_reports import LogReport, MetricsReport, StepReport
from orchestrator.tracking.console_log import captured


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


def test_a_scripts_stdout_is_in_the_log_with_its_stderr_in_the_order_printed():
    err, out = io.StringIO(), io.StringIO()
    console = Console(err, interactive=False, out=out)
    with captured(console) as log:
        console.on_log(LogReport(world_rank=0, stream="stdout", line="epoch 1 loss 0.5"))
        console.on_log(LogReport(world_rank=1, stream="stderr", line="UserWarning: slow"))
        console.on_log(LogReport(world_rank=0, stream="stdout", line="epoch 2 loss 0.4"))
    assert console.out is out and console.stream is err
    assert out.getvalue() == "[rank 0] epoch 1 loss 0.5\n[rank 0] epoch 2 loss 0.4\n"
    assert log.text().splitlines() == [
        "[rank 0] epoch 1 loss 0.5",
        "[rank 1] UserWarning: slow",
        "[rank 0] epoch 2 loss 0.4",
    ]


def test_a_redrawn_line_is_kept_in_its_final_state_only():
    for interactive in (True, False):
        err = io.StringIO()
        console = Console(err, interactive=interactive, out=io.StringIO())
        with captured(console) as log:
            for step in range(1, 301):  # a progress bar redrawn 300 times
                console.on_log(LogReport(world_rank=0, stream="stderr", line=f"{step}/300", redrawn=step < 300))
            console.on_log(LogReport(world_rank=0, stream="stderr", line="5/9", redrawn=True))  # left unfinished
        assert err.getvalue().count("\r") == 299  # the stream itself still got every redraw
        assert log.text().splitlines() == ["[rank 0] 300/300", "[rank 0] 5/9"]


def test_blank_lines_and_crlf_endings_are_kept_as_lines():
    console = Console(io.StringIO(), interactive=False, out=io.StringIO())
    with captured(console) as log:
        console.stream.write("a\r\n\nb\n")
    assert log.text() == "a\n\nb\n"
