"""The run's metric buffer: a background thread that writes metric values in batches.

The caller (the driver loop) only appends to a bounded in-memory buffer; one thread owned by the
writer sends what is buffered, as many values per request as the store takes, and retries with
backoff while the store is unreachable. A value waits at most `max_outage_s` for a store that keeps
failing; older ones are dropped and reported. Pure: threading only, the store comes in as `send`.
"""

from __future__ import annotations

import collections
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Deque, Optional, Sequence

from orchestrator.thread_priority import lower_thread_priority

BATCH_LIMIT = 1000
"""MLflow's limit of metric values per log_batch request."""
BUFFER_LIMIT = 100_000
"""Values held at most (a few MB); a full buffer makes `put` wait for the writer (back-pressure)."""
REQUEST_TIMEOUT_S = 10.0
"""Longest single write attempt; the final flush shortens it to the time it has left."""
FIRST_RETRY_S = 0.5
MAX_RETRY_S = 10.0
"""Backoff between failed attempts doubles from FIRST_RETRY_S up to MAX_RETRY_S."""


@dataclass(frozen=True)
class MetricValue:
    """One metric value at a step, time-stamped when the driver received it (so retries are idempotent)."""

    key: str
    value: float
    timestamp_ms: int
    step: int


Send = Callable[[Sequence[MetricValue], float], None]
"""Writes one batch within the given timeout (seconds) or raises."""


@dataclass
class DropLog:
    """What was not recorded: count and step range per metric key."""

    steps: dict[str, list[int]] = field(default_factory=dict)

    def add(self, values: Sequence[MetricValue]) -> None:
        """Count `values` as dropped."""
        for value in values:
            self.steps.setdefault(value.key, []).append(value.step)

    @property
    def total(self) -> int:
        """Number of dropped values."""
        return sum(len(steps) for steps in self.steps.values())

    def describe(self) -> str:
        """One line: `train/loss: 12 values, steps 10-120; ...`."""
        parts = []
        for key, steps in sorted(self.steps.items()):
            low, high = min(steps), max(steps)
            where = f"step {low}" if low == high else f"steps {low}-{high}"
            parts.append(f"{key}: {len(steps)} value{'s' if len(steps) != 1 else ''}, {where}")
        return "; ".join(parts)


@dataclass(frozen=True)
class WriterReport:
    """The writer's account at close: values written, values dropped, and how long the final flush took."""

    written: int
    dropped: DropLog
    flush_s: float
    reachable: bool
    """False when the store was failing at close (its last attempt failed)."""


class MetricWriter:
    """Owns the buffer and the thread that drains it; `close()` stops the thread on every path."""

    def __init__(
        self,
        send: Send,
        max_outage_s: float,
        is_transient: Callable[[BaseException], bool],
        buffer_limit: int = BUFFER_LIMIT,
        first_retry_s: float = FIRST_RETRY_S,
        max_retry_s: float = MAX_RETRY_S,
        name: str = "orchestrator-metric-writer",
    ):
        self.send = send
        self.max_outage_s = max_outage_s
        self.is_transient = is_transient
        self.buffer_limit = buffer_limit
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        self.name = name
        self._cond = threading.Condition()
        self._pending: Deque[tuple[float, MetricValue]] = collections.deque()
        self._accepted = 0
        self._resolved = 0
        self._written = 0
        self._dropped = DropLog()
        self._notices: list[str] = []
        self._outage: Optional[_Outage] = None
        self._retry_at = 0.0
        self._deadline: Optional[float] = None
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "MetricWriter":
        """Start the writing thread (daemon: the owner stops it, the flag only spares a hung interpreter exit)."""
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def put(self, values: Sequence[MetricValue]) -> None:
        """Buffer values for writing; waits only while the buffer is full (back-pressure)."""
        with self._cond:
            while len(self._pending) >= self.buffer_limit and self._deadline is None:
                self._cond.wait()
            if self._deadline is not None:  # closed: nothing would write these any more
                self._dropped.add(values)
                return
            now = time.monotonic()
            self._pending.extend((now, value) for value in values)
            self._accepted += len(values)
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every value put so far is written or dropped; False if `timeout_s` passed first."""
        with self._cond:
            target = self._accepted
            return self._cond.wait_for(lambda: self._resolved >= target, timeout=timeout_s)

    def close(self, timeout_s: float) -> WriterReport:
        """Write what is buffered within `timeout_s`, drop the rest, stop the thread; idempotent."""
        started = time.monotonic()
        with self._cond:
            if self._deadline is None:
                self._deadline = started + timeout_s
            self._cond.notify_all()
        if self._thread is not None:
            # the thread gives up at the deadline; one request may still be in flight, bounded by its timeout
            self._thread.join(timeout=timeout_s + REQUEST_TIMEOUT_S)
        with self._cond:
            return WriterReport(
                written=self._written,
                dropped=self._dropped,
                flush_s=time.monotonic() - started,
                reachable=self._outage is None,
            )

    @property
    def reachable(self) -> bool:
        """False while writes are failing (an outage the writer has not seen the end of)."""
        with self._cond:
            return self._outage is None

    def notices(self) -> list[str]:
        """Messages for the console since the last call (outages, recoveries, drops); the caller prints them."""
        with self._cond:
            notices, self._notices = self._notices, []
            return notices

    def _run(self) -> None:
        lower_thread_priority()  # metric writes wait for the ranks' idle moments (orchestrator/thread_priority.py)
        while True:
            batch, timeout_s = self._next_batch()
            if not batch:
                return
            try:
                self.send(batch, timeout_s)
            except Exception as error:  # the store's failure is data here: retried, or the batch is dropped
                with self._cond:
                    self._failed(batch, error)
                    self._cond.notify_all()
            else:
                with self._cond:
                    self._delivered(len(batch))
                    self._cond.notify_all()

    def _next_batch(self) -> tuple[list[MetricValue], float]:
        """The oldest buffered values, once it is time to (re)try; empty when closed."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._deadline is not None and (now >= self._deadline or not self._pending):
                    self._drop(len(self._pending))
                    return [], 0.0
                if self._pending and now >= self._retry_at:
                    count = min(len(self._pending), BATCH_LIMIT)
                    batch = [self._pending[index][1] for index in range(count)]
                    return batch, self._request_timeout(now)
                wake_at = [t for t in (self._retry_at if self._pending else None, self._deadline) if t is not None]
                self._cond.wait(timeout=max(min(wake_at) - now, 0.0) if wake_at else None)

    def _request_timeout(self, now: float) -> float:
        if self._deadline is None:
            return REQUEST_TIMEOUT_S
        return max(min(REQUEST_TIMEOUT_S, self._deadline - now), 0.1)

    def _delivered(self, count: int) -> None:
        for _ in range(count):
            self._pending.popleft()
        self._written += count
        self._resolved += count
        if self._outage is not None:
            self._notices.append(self._outage.recovered(time.monotonic()))
            self._outage = None
        self._retry_at = 0.0

    def _failed(self, batch: list[MetricValue], error: Exception) -> None:
        now = time.monotonic()
        if not self.is_transient(error):
            self._notices.append(f"MLflow rejected {len(batch)} metric values, which are dropped: {_short(error)}")
            self._drop(len(batch))
            return
        outage = self._outage
        if outage is None:
            outage = self._outage = _Outage(since=now, first_error=_short(error), dropped=DropLog())
            self._notices.append(
                f"MLflow: cannot write metrics ({outage.first_error}); buffering them and "
                f"retrying for up to {self.max_outage_s:g} s (tracking.max_outage_s)"
            )
        self._drop_older_than(outage, now - self.max_outage_s)
        delay = self.first_retry_s * 2**outage.attempts
        outage.attempts += 1
        self._retry_at = now + min(delay, self.max_retry_s)

    def _drop_older_than(self, outage: _Outage, cutoff: float) -> None:
        """Drop the values buffered at or before `cutoff`, counting them in the current `outage`'s log."""
        count = 0
        while count < len(self._pending) and self._pending[count][0] <= cutoff:
            count += 1
        if count and not outage.dropped.total:
            self._notices.append(
                f"MLflow: still unreachable after {self.max_outage_s:g} s (tracking.max_outage_s): "
                f"dropping metric values older than that; training goes on"
            )
        self._drop(count, outage.dropped)

    def _drop(self, count: int, also: Optional[DropLog] = None) -> None:
        values = [self._pending.popleft()[1] for _ in range(count)]
        self._dropped.add(values)
        if also is not None:
            also.add(values)
        self._resolved += count


@dataclass
class _Outage:
    """A stretch of failing writes: when it began, the first error, attempts, and what it cost."""

    since: float
    first_error: str
    dropped: DropLog
    attempts: int = 0

    def recovered(self, now: float) -> str:
        """The console line for the end of the outage."""
        line = f"MLflow: reachable again after {now - self.since:.0f} s"
        if self.dropped.total:
            return f"{line}; {self.dropped.total} metric values were dropped ({self.dropped.describe()})"
        return f"{line}; no metric value was lost"


def _short(error: BaseException) -> str:
    """The error in a few words: an OS error buried in a wrapped HTTP error is what the user needs."""
    text = " ".join(str(error).split())
    cause = re.search(r"\[Errno -?\d+\] [^'\"()]+", text)
    if cause:
        text = cause.group(0).strip()
    elif len(text) > 200:
        text = text[:197] + "..."
    return f"{type(error).__name__}: {text}"
