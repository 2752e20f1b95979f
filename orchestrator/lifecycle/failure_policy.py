"""Pure failure decisions: given what failed and how many restarts were spent, restart or give up."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

from orchestrator.config.schema import FailureConfig
from orchestrator.lifecycle.rank_reports import ErrorReport


class FailureKind(enum.Enum):
    """Why a rank is considered failed."""

    WORKER_DIED = "worker died"
    """Its process, or its script's, ended without finishing: killed by a signal, out of memory, its node lost."""
    HANG = "hang"
    """It finished no optimizer step within failure.hang_timeout_s."""
    USER_ERROR = "exception"
    """Code on the rank raised (the training loop, the model)."""
    SCRIPT_ERROR = "script error"
    """The user's script exited with an error status (a bad argument, an uncaught exception): a rerun
    repeats it, so it is retried only with failure.retry_script_errors (torchrun fails at once too)."""
    COMMUNICATION = "communication"
    """A collective failed because a peer went away or stopped answering (a consequence, usually)."""
    LAUNCH = "launch"
    """Its group could not be (re)started: placement timed out, a worker died while starting."""
    DETERMINISTIC = "deterministic error"
    """An error that every restart repeats exactly: a checkpoint that does not load, the user's code that does
    not import, a config error. Never retried."""
    PREEMPTED = "preempted"
    """A node of the job is being taken away with notice (drained with a deadline, SIGTERM before an eviction):
    the ranks checkpoint and the job restarts without that node, on its own budget (failure.max_preemptions)."""
    RESIZE = "resize"
    """Not a failure: an elastic job running below scaling.num_workers stops at a checkpoint to grow back."""

    @property
    def is_infra(self) -> bool:
        """True for failures of the machinery rather than of the code being trained."""
        return self not in (FailureKind.USER_ERROR, FailureKind.SCRIPT_ERROR, FailureKind.DETERMINISTIC)

    @property
    def counts_as_restart(self) -> bool:
        """Whether a restart after it spends failure.max_restarts (a preemption or a resize does not)."""
        return self not in (FailureKind.PREEMPTED, FailureKind.RESIZE)

    @property
    def blames_node(self) -> bool:
        """Whether it counts against the node the rank ran on (failure.exclude_node_after): the rank's process
        died or hung there. A broken collective is usually reported by the survivors, not the culprit."""
        return self in (FailureKind.WORKER_DIED, FailureKind.HANG)


# what gloo, NCCL and torch.distributed say when a peer crashed, vanished or stopped answering
_COMMUNICATION_MARKERS = (
    "Connection closed by peer",
    "Connection reset by peer",
    "Connection refused",
    "Broken pipe",
    "remote worker crashing",
    "NCCL error",
    "ncclRemoteError",
    "ProcessGroupNCCL",
    "ProcessGroupGloo",
    "Socket Timeout",
    "timed out after",
)
_COMMUNICATION_TYPES = ("DistBackendError", "DistNetworkError", "DistStoreError")
_DETERMINISTIC_TYPES = ("CheckpointLoadError", "ConfigError", "ModuleNotFoundError", "ImportError", "SyntaxError")


def classify_error(report: ErrorReport) -> FailureKind:
    """What a rank's failure report means, by how the rank ended.

    A script killed by a signal (the OOM killer's SIGKILL, a node going down) died of its machine:
    WORKER_DIED. A script that exited with an error status: SCRIPT_ERROR, unless the end of its stderr
    shows a collective broken by a lost peer (COMMUNICATION, as for an exception in the worker).
    An exception in the worker: COMMUNICATION for such collectives, else USER_ERROR.
    """
    if report.exit_code is not None and report.exit_code < 0:
        return FailureKind.WORKER_DIED
    if report.exit_code is None and report.error_type in _DETERMINISTIC_TYPES:
        return FailureKind.DETERMINISTIC
    text = report.message if report.exit_code is None else report.traceback
    if report.error_type in _COMMUNICATION_TYPES or any(marker in text for marker in _COMMUNICATION_MARKERS):
        return FailureKind.COMMUNICATION
    return FailureKind.USER_ERROR if report.exit_code is None else FailureKind.SCRIPT_ERROR


@dataclass(frozen=True)
class Failure:
    """One failure of the job, as the controller saw it."""

    kind: FailureKind
    summary: str
    world_rank: Optional[int] = None
    node_ip: Optional[str] = None
    traceback: str = ""


@dataclass(frozen=True)
class Decision:
    """Restart from the newest checkpoint, or fail the job; `reason` says why in words."""

    restart: bool
    reason: str


def decide(failure: Failure, restarts_done: int, policy: FailureConfig, preemptions_done: int = 0) -> Decision:
    """Restart unless the failure kind is excluded or its budget is spent.

    `restarts_done` counts the earlier restarts that spent failure.max_restarts, `preemptions_done` those after
    a preemption (failure.max_preemptions); a resize spends neither.
    """
    if failure.kind is FailureKind.RESIZE:
        return Decision(True, "resize (not counted as a restart)")
    if failure.kind is FailureKind.PREEMPTED:
        limit = policy.max_preemptions
        if limit != -1 and preemptions_done >= limit:
            return Decision(False, f"gave up after {preemptions_done} preemptions (failure.max_preemptions={limit})")
        left = "no limit" if limit == -1 else f"{limit - preemptions_done - 1} left"
        return Decision(
            True, f"preemption restart {preemptions_done + 1} ({left}; not counted in failure.max_restarts)"
        )
    if failure.kind is FailureKind.DETERMINISTIC:
        return Decision(False, "every restart would fail the same way: not restarted")
    if failure.kind is FailureKind.SCRIPT_ERROR and not policy.retry_script_errors:
        return Decision(
            False,
            "a script that exits with an error would exit the same way again: it is not "
            "restarted (set failure.retry_script_errors=true to retry it)",
        )
    if not failure.kind.is_infra and policy.restart_on == "infra_only":
        return Decision(
            False, "failure.restart_on=infra_only: errors of the code (exceptions, script errors) are not retried"
        )
    if policy.max_restarts != -1 and restarts_done >= policy.max_restarts:
        return Decision(False, f"gave up after {restarts_done} restarts (failure.max_restarts={policy.max_restarts})")
    # what is left once this restart is spent
    budget = "no limit" if policy.max_restarts == -1 else f"{policy.max_restarts - restarts_done - 1} left"
    return Decision(True, f"restart {restarts_done + 1} ({budget})")
