"""Holding a Ctrl-C for the few milliseconds in which bookkeeping must not be cut in half.

Python raises KeyboardInterrupt at the next bytecode boundary, which may be between a record written to a
store (an Optuna trial asked for, a result told) and the note that it was written, so the record is left
half-done: a trial RUNNING forever in the study. Around such a block the first Ctrl-C is held and raised
when the block ends; a second one is raised at once, so a block that hangs (a storage server that does
not answer) can still be left.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Iterator, Optional


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Run the block with a first Ctrl-C held until it ends, then handled as it would have been.

    Only the main thread receives Python's signals; elsewhere, and where Ctrl-C is ignored (nohup, a
    background job), the block runs as it is.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
        signal.SIG_IGN,
        None,
    ):
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: Optional[FrameType]) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if not received:
        return
    if callable(previous):
        previous(signal.SIGINT, None)
    elif previous == signal.SIG_DFL:
        raise KeyboardInterrupt
