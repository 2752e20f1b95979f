"""Registration when a run or a sweep ends (`tracking.register_as`): one line for the console, never an error.

The run is over and recorded by then; a registry that refuses (a server that went away, a run without a
logged model) is reported in the line, and the version can still be made from the run later.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.config.schema import TrackingConfig


def register_after_run(tracking: TrackingConfig, run_id: str, what: str) -> str:
    """Register `run_id`'s logged model as tracking.register_as (alias tracking.register_alias); says what happened.

    `what` names the run in the line: "the run", "the best trial (3)".
    """
    from mlflow import MlflowClient

    from orchestrator.registry.store import register_run_model
    from orchestrator.tracking.store_guard import StoreGuard

    name = tracking.register_as
    assert name is not None  # callers register only when it is set
    try:
        guard = StoreGuard.for_uri(tracking.uri)
        client = guard.call(lambda: MlflowClient(tracking_uri=tracking.uri))
        registered = guard.call(lambda: register_run_model(client, run_id, name, tracking.register_alias))
    except Exception as error:  # the run stays recorded: say why there is no version
        return f"MLflow: {what} ({run_id}) was not registered as {name!r}: {type(error).__name__}: {error}"
    alias = f", alias {registered.alias} -> version {registered.version}" if registered.alias else ""
    return (
        f"registered {what}'s model as {name} version {registered.version}{alias} "
        f"(promote: orchestrator promote {name} --alias champion)"
    )
