"""The handshake between `orchestrator train -m` and the Hydra launcher: who keeps the sweep's session.

Hydra gives the launcher only the task function, and the sweeper calls the launcher once per batch of
trials; the sweep's session (one Ray connection, one MLflow parent run) must outlive every batch and be
closed by the command when Hydra is done. The command's task function holds it. The launcher knows that
task function by this protocol, not by its class, so the launchers never import the CLI.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, runtime_checkable


@runtime_checkable
class SweepSessionHolder(Protocol):
    """A task function that keeps a sweep's session across the sweeper's batches."""

    sweep: Optional[Any]
    """The open session (launchers.jobs.sweep_session.SweepSession), None until the first batch opens it."""

    def sweep_session(self, open_session: Callable[[], Any]) -> Any:
        """The sweep's session, opened with `open_session` on the first call and kept for the next ones."""
