"""The driver's live progress line: epoch, step, loss, samples/s and ETA."""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, Protocol

from orchestrator.lifecycle.rank_reports import LogReport, MetricsReport, StepReport

LINE_INTERVAL_S = 10.0
"""Without a terminal (CI, log files) a progress line is printed at most this often."""


class TextStream(Protocol):
    """What the console writes to: a text file (sys.stderr, io.StringIO) or a stand-in such as a sweep's
    trial-prefixing stream, which is no full TextIO."""

    def write(self, text: str, /) -> int:
        """Write `text`; returns how many characters were taken."""

    def flush(self) -> None:
        """Push what was written on to its destination."""

    def isatty(self) -> bool:
        """Whether the stream is a terminal (the progress line is then redrawn in place)."""


class Console:
    """Renders rank 0's progress; rewrites one line on a terminal, prints sparse lines elsewhere."""

    def __init__(
        self,
        stream: Optional[TextStream] = None,
        interactive: Optional[bool] = None,
        clock: Callable[[], float] = time.monotonic,
        out: Optional[TextStream] = None,
    ):
        # looked up now, not at import: sys.stderr/sys.stdout may have been replaced since
        stream = sys.stderr if stream is None else stream
        self.stream: TextStream = stream
        self.out: TextStream = sys.stdout if out is None else out
        self.interactive = stream.isatty() if interactive is None else interactive
        self.clock = clock
        self.loss: Optional[float] = None
        self.samples_per_s: Optional[float] = None
        self.started: Optional[tuple[float, int]] = None
        self.last_line = float("-inf")
        self.reported: dict[str, float] = {}
        """The latest value of every key a script reported."""
        self.open_line: Optional[tuple] = None
        """Who drew the unfinished line at the end of the output: ("progress",) or ("log", rank, stream)."""

    def on_metrics(self, report: MetricsReport) -> None:
        """Remember the latest loss and throughput for the progress line."""
        self.loss = report.metrics.get("train/loss", self.loss)
        self.samples_per_s = report.metrics.get("train/samples_per_s", self.samples_per_s)

    def on_script_metrics(self, report: MetricsReport) -> None:
        """A script's report (orchestrator.report), which comes without heartbeats: a line of its own with
        the step and the latest value of every key reported so far (as sparse as the progress line)."""
        self.reported.update(report.metrics)
        now = self.clock()
        if not self.interactive and now - self.last_line < LINE_INTERVAL_S:
            return
        self.last_line = now
        values = " | ".join(f"{key} {value:.4g}" for key, value in self.reported.items())
        self._write(f"step {report.step} | {values}", final=False)

    def on_step(self, report: StepReport) -> None:
        """Redraw the progress line from rank 0's heartbeat."""
        if report.world_rank != 0:
            return
        now = self.clock()
        started = self.started
        if started is None:
            started = self.started = (now, report.step)
        final = report.step >= report.total_steps
        if not self.interactive and not final and now - self.last_line < LINE_INTERVAL_S:
            return
        self.last_line = now
        self._write(self._render(report, now, started), final)

    def _render(self, report: StepReport, now: float, started: tuple[float, int]) -> str:
        """The progress line; `started` is (time, step) of the first heartbeat, whence the ETA."""
        parts = [f"epoch {report.epoch + 1}", f"step {report.step}/{report.total_steps}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.samples_per_s is not None:
            parts.append(f"{self.samples_per_s:,.0f} samples/s")
        start_time, start_step = started
        if report.step > start_step:
            remaining = (now - start_time) / (report.step - start_step) * (report.total_steps - report.step)
            parts.append(f"ETA {_clock_text(remaining)}")
        return " | ".join(parts)

    def _write(self, text: str, final: bool) -> None:
        if self.open_line != ("progress",):
            self._end_line()  # a script's progress bar in the middle of drawing
        if self.interactive:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
            self.open_line = None if final else ("progress",)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def on_log(self, report: LogReport) -> None:
        """A line a rank's script printed, prefixed with the rank (stderr lines go to our stderr).

        A line the script redraws (a progress bar ending in a carriage return) is redrawn here in
        place too, until the rank's next line on that stream ends it or another line interrupts it.
        """
        stream = self.stream if report.stream == "stderr" else self.out
        drawer = ("log", report.world_rank, report.stream)
        if self.open_line == drawer:
            stream.write("\r\033[K" if self.interactive else "\r")
        else:
            self._end_line()
        stream.write(f"[rank {report.world_rank}] {report.line}" + ("" if report.redrawn else "\n"))
        self.open_line = drawer if report.redrawn else None
        stream.flush()

    def message(self, text: str) -> None:
        """Print a line of its own (ends the progress line first)."""
        self._end_line()
        self.stream.write(text + "\n")
        self.stream.flush()

    def warning(self, text: str) -> None:
        """Print a warning line of its own (monitoring: stragglers, idle GPUs)."""
        self.message(f"warning: {text}")

    def close(self) -> None:
        """Leave the terminal on a fresh line."""
        self._end_line()

    def _end_line(self) -> None:
        if self.open_line is not None:
            drawer, self.open_line = self.open_line, None
            stream = self.out if drawer[0] == "log" and drawer[2] == "stdout" else self.stream
            stream.write("\n")
            stream.flush()


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
