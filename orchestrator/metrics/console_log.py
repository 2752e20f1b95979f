"""The run's console log: a tee of what the job's Console writes, kept as the `console.log` artifact."""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterable, Iterator, TextIO

CONSOLE_ARTIFACT = "console.log"
# a terminal's progress line is redrawn in place ("\r" + erase line); the log keeps each drawing as a line
_LINE_BREAKS = re.compile(r"(\r\x1b\[K|\r|\n)")


class ConsoleLog:
    """A text stream that passes everything on to `stream` and keeps a copy, line by line."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.lines: list[str] = []
        self.partial = ""

    def write(self, text: str) -> int:
        """Write to the real stream and keep the text."""
        self.stream.write(text)
        for piece in _LINE_BREAKS.split(text):
            if piece == "\n" or (piece.startswith("\r") and self.partial):
                self.lines.append(self.partial)
                self.partial = ""
            elif not piece.startswith("\r"):
                self.partial += piece
        return len(text)

    def flush(self) -> None:
        """Flush the real stream."""
        self.stream.flush()

    def isatty(self) -> bool:
        """Whether the real stream is a terminal."""
        return self.stream.isatty()

    def extend(self, lines: Iterable[str]) -> None:
        """Keep lines that were printed elsewhere (the final summary goes to stdout)."""
        if self.partial:
            self.lines.append(self.partial)
            self.partial = ""
        self.lines.extend(lines)

    def text(self) -> str:
        """Everything kept so far, one line per line."""
        return "".join(f"{line}\n" for line in self.lines + ([self.partial] if self.partial else []))


@contextlib.contextmanager
def captured(console: Any) -> Iterator[ConsoleLog]:
    """Tee `console.stream` into a ConsoleLog for the duration of the block; the stream is restored after."""
    log = ConsoleLog(console.stream)
    console.stream = log
    try:
        yield log
    finally:
        console.stream = log.stream
