"""The driver's stop request as seen by a rank: polled by the training loop, or a callback."""

from __future__ import annotations

import threading
from typing import Callable


class StopSignal:
    """Set once when the driver asks the rank to stop; runners check it or subscribe to it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def is_set(self) -> bool:
        """True once a stop was requested."""
        return self._event.is_set()

    def set(self) -> None:
        """Request the stop and run every subscribed callback (once)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run `callback` when a stop is requested (at once if it already was)."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()
