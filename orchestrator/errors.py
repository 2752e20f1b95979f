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


class WorkerFailed(OrchestratorError):
    """A rank failed and the failure policy gave up; carries the rank, node and traceback."""

    exit_code = 1

    def __init__(self, summary: str, traceback_text: str = ""):
        self.summary = summary
        self.traceback_text = traceback_text
        super().__init__(summary if not traceback_text else f"{summary}\n{traceback_text}")


class JobInterrupted(OrchestratorError):
    """The user stopped the job (Ctrl-C or SIGTERM); the run is recorded as KILLED."""

    exit_code = 130
