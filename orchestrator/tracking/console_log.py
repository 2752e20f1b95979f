"""The run's console log: a tee of what the job's Console writes, kept as the `console.log` artifact."""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:  # only types here: the tracking core does not import the command line's modules
    from orchestrator.cli.console import Console, TextStream

CONSOLE_ARTIFACT = "console.log"
# a line redrawn in place (the driver's progress line: "\r" + erase line; a script's progress bar: "\r")
# is kept in its final state only, as the terminal shows it when the line ends
_LINE_BREAKS = re.compile(r"(\r\n|\r\x1b\[K|\r|\n)")


class ConsoleLog:
    """The record: every finished line written to the streams it tees, in the order the lines ended."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.tees: list[Tee] = []

    def tee(self, stream: TextStream) -> "Tee":
        """A stream that writes to `stream` and keeps a copy of its lines here."""
        tee = Tee(stream, self)
        self.tees.append(tee)
        return tee

    def extend(self, lines: Iterable[str]) -> None:
        """Keep lines that were printed elsewhere (the final summary goes to stdout)."""
        for tee in self.tees:
            tee.end_line()
        self.lines.extend(lines)

    def text(self) -> str:
        """Everything kept so far, one line per line."""
        unfinished = [tee.partial for tee in self.tees if tee.partial]
        return "".join(f"{line}\n" for line in self.lines + unfinished)


class Tee:
    """A text stream that passes everything on to `stream` and hands its finished lines to a ConsoleLog."""

    def __init__(self, stream: TextStream, log: ConsoleLog):
        self.stream = stream
        self.log = log
        self.partial = ""
        self.redrawing = False
        """A carriage return came: the next text replaces the unfinished line instead of extending it."""

    def write(self, text: str) -> int:
        """Write to the real stream and keep the text."""
        self.stream.write(text)
        for piece in _LINE_BREAKS.split(text):
            if piece in ("\n", "\r\n"):
                self.log.lines.append(self.partial)
                self.partial, self.redrawing = "", False
            elif piece.startswith("\r"):
                self.redrawing = True
            elif piece:
                self.partial = piece if self.redrawing else self.partial + piece
                self.redrawing = False
        return len(text)

    def end_line(self) -> None:
        """Hand the unfinished line, if there is one, to the log as a finished one."""
        if self.partial:
            self.log.lines.append(self.partial)
        self.partial, self.redrawing = "", False

    def flush(self) -> None:
        """Flush the real stream."""
        self.stream.flush()

    def isatty(self) -> bool:
        """Whether the real stream is a terminal."""
        return self.stream.isatty()


@contextlib.contextmanager
def captured(console: Console) -> Iterator[ConsoleLog]:
    """Tee `console.stream` and `console.out` (a script's stdout) into one ConsoleLog for the duration of the
    block; the streams are restored after."""
    log = ConsoleLog()
    stream, out = console.stream, console.out
    console.stream, console.out = log.tee(stream), log.tee(out)
    try:
        yield log
    finally:
        console.stream, console.out = stream, out
