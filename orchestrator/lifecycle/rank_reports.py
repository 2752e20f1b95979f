"""What ranks tell the driver. Small frozen records: produced by workers, consumed by the controller.

Workers never talk to MLflow: everything the run records arrives at the driver as one of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class StepReport:
    """A rank's heartbeat: progress and how long its recent optimizer steps took."""

    world_rank: int
    step: int
    """Optimizer steps completed so far (the global step)."""
    total_steps: int
    epoch: int
    step_time_s: float
    """Mean wall time per optimizer step since this rank's previous StepReport."""
    steps_timed: int
    reach_sync_s: Optional[float] = None
    """Mean time per optimizer step this rank took to reach gradient synchronisation (forward and
    backward up to its first all-reduce bucket) since its previous StepReport. Under DDP step_time_s
    is nearly equal on all ranks because fast ranks wait inside the all-reduce for the slow one; this
    is not, so it shows stragglers. None where not measured (script entrypoint, no step finished)."""


@dataclass(frozen=True)
class MetricsReport:
    """Scalar metrics at a global step (rank 0 sends these; values are already reduced over ranks)."""

    step: int
    metrics: Mapping[str, float]


@dataclass(frozen=True)
class CheckpointReport:
    """Rank 0 completed a checkpoint (the file is in place after its atomic rename)."""

    step: int
    path: str


@dataclass(frozen=True)
class ResultReport:
    """A rank finished its work; rank 0 also hands back the trained weights for the model registry."""

    world_rank: int
    step: int
    stopped: bool = False
    """True when the rank stopped early because the driver asked it to."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    params_digest: str = ""
    """SHA-256 over the rank's parameters and buffers: equal on every rank when DDP kept replicas in sync."""
    model_state: Optional[Mapping[str, Any]] = None
    input_example: Any = None


@dataclass(frozen=True)
class ErrorReport:
    """A rank failed: an exception raised on it (user code or ours) with its traceback, or its script
    ended in failure (the traceback is then the end of the script's stderr)."""

    world_rank: int
    node_ip: str
    error_type: str
    message: str
    traceback: str
    exit_code: Optional[int] = None
    """How the rank's script process ended (entrypoint=script): > 0 its exit status, < 0 the signal that
    killed it (SIGKILL: -9, as subprocess reports it); None for an exception raised in the worker itself."""


@dataclass(frozen=True)
class LogReport:
    """A line a rank's script printed (entrypoint=script); the driver prints it prefixed by the rank."""

    world_rank: int
    stream: str
    """stdout or stderr."""
    line: str
    redrawn: bool = False
    """The script ended this line with a carriage return (a progress bar): its next line on the same
    stream is drawn over it."""


@dataclass(frozen=True)
class AttemptStartReport:
    """A rank finished the first optimizer step of an attempt (the first run or one after a restart)."""

    world_rank: int
    resumed_step: int
    """The global step the attempt started from (0 for a fresh start)."""
    timings: Mapping[str, float]
    """Seconds spent in: process_group, build (data + model), checkpoint_load, first_step."""
    wall_time: float
    """time.time() when that first step finished."""


@dataclass(frozen=True)
class PreemptionNotice:
    """A rank's process got SIGTERM (what Kubernetes sends before it evicts a pod): its node is going away.

    The rank keeps training until the driver asks the ranks to stop; the job then checkpoints and restarts
    without that node, as for a node drained with a deadline.
    """

    world_rank: int
    node_ip: str
    signal: str = "SIGTERM"
