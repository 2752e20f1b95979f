"""The registry's user errors."""

from __future__ import annotations

from orchestrator.errors import OrchestratorError


class RegistryError(OrchestratorError, ValueError):
    """A registry request that cannot be done as asked (unknown model, version or alias; a missing metric)."""

    exit_code = 2
