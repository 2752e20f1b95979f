"""Safe writes to a local SQLite store shared by several runs, threads or processes.

SQLite takes one writer at a time. Within a process, every run writing one database file takes the
same lock; across processes, an exclusive `flock` on `<database>.lock` makes writers (and MLflow's
first-use schema migration, which races when two processes open a fresh file) take turns. Writes that
still fail transiently ("database is locked" from a writer outside the orchestrator) are retried
with backoff. A tracking server needs none of this: it serializes writes itself.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, TypeVar

SQLITE_PREFIX = "sqlite:///"
RETRY_WINDOW_S = 120.0
"""How long a synchronous write is retried while the store reports itself busy."""
FIRST_RETRY_S = 0.2
MAX_RETRY_S = 5.0

T = TypeVar("T")

# One SQLite file is one process-wide resource: every recorder in this process that writes it (a
# sweep's trials, each with its own MlflowClient) must take the same lock, so the registry of locks
# is process-global too. The guard lock only protects the dictionary.
_FILE_LOCKS: dict[str, threading.Lock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def sqlite_path(tracking_uri: str) -> Optional[Path]:
    """The database file of a `sqlite:///` URI, or None for any other store."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    # sqlite:////abs/path.db names /abs/path.db; sqlite:///rel.db a path relative to the working directory
    return Path(tracking_uri[len(SQLITE_PREFIX) :].split("?", 1)[0]).resolve()


def is_transient(error: BaseException) -> bool:
    """True for failures worth retrying: unreachable or busy stores, 5xx and 429 answers."""
    from mlflow.exceptions import MlflowException

    if isinstance(error, MlflowException):
        status = error.get_http_status_code()
        return status >= 500 or status == 429
    # requests' errors are OSErrors; sqlalchemy's OperationalError covers a locked or missing database
    return isinstance(error, OSError) or type(error).__name__ == "OperationalError"


class StoreGuard:
    """Serializes writes to one SQLite store (threads and processes) and retries busy errors."""

    def __init__(self, database: Optional[Path], retry_window_s: float = RETRY_WINDOW_S):
        self.database = database
        self.retry_window_s = retry_window_s

    @classmethod
    def for_uri(cls, tracking_uri: str) -> "StoreGuard":
        """The guard for a tracking URI: locking for SQLite files, a pass-through for anything else."""
        return cls(sqlite_path(tracking_uri))

    def attempt(self, operation: Callable[[], T]) -> T:
        """Run one write once, holding the store's locks."""
        with self._locked():
            return operation()

    def call(self, operation: Callable[[], T]) -> T:
        """Run one write, retrying transient failures with backoff for up to `retry_window_s`."""
        if self.database is None:
            return operation()  # MlflowClient retries HTTP requests itself
        deadline = time.monotonic() + self.retry_window_s
        delay = FIRST_RETRY_S
        while True:
            try:
                return self.attempt(operation)
            except Exception as error:
                if not is_transient(error) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)  # backoff before the next attempt, not synchronisation
            delay = min(delay * 2, MAX_RETRY_S)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.database is None:
            yield
            return
        with _process_lock(self.database), _file_lock(self.database):
            yield


def _process_lock(database: Path) -> threading.Lock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(str(database), threading.Lock())


@contextlib.contextmanager
def _file_lock(database: Path) -> Iterator[None]:
    import fcntl

    database.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
