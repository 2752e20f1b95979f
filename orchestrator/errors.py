"""The errors users see: each says what is wrong and what to change."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base of the orchestrator's own errors; `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(OrchestratorError, ValueError):
    """The job's configuration is invalid; raised before any cluster resource is taken."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"invalid configuration:\n{lines}")


class PlanError(OrchestratorError, ValueError):
    """The cluster cannot run the job as configured (decided after connecting, before any actor)."""

    exit_code = 2


class LaunchError(OrchestratorError):
    """The job could not be started on the cluster (connection, placement, rendezvous).

    `retryable` marks launches that failed for a passing reason (a worker died while starting) and
    may be tried again under the failure policy; a placement timeout is final.
    """

    exit_code = 1

    def __init__(self, message: str, retryable: bool = False):
        self.retryable = retryable
        super().__init__(message)


class CheckpointLoadError(OrchestratorError):
    """A checkpoint does not load into the job (another model, a damaged file): every retry would fail the same way."""

    exit_code = 1
