"""Who decides that a trial stops early, as the sweep's driver sees it: a rule or the sweeper's per-trial judge.

Under the basic sweeper the driver owns the rule (sweep.early_stop=median, shared by every trial). Under
hydra/sweeper=optuna the sweeper owns the Optuna trials, so it hands the launcher one judge per trial,
alongside the trial's overrides; the launcher asks that judge at every evaluation and tells it how the
trial ended. No state is shared through globals: each trial's judge travels with its TrialSpec.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence, runtime_checkable


class StopRule(Protocol):
    """Decides at each evaluation whether a trial stops now (MedianStoppingRule, an Optuna judge)."""

    stopped_status: str
    """The trial's status when this rule stopped it: STOPPED or PRUNED."""
    stopped_tag: str
    """The tag on the trial's run that says why it stopped."""

    def verdict(self, step: int, value: float) -> Optional[str]:
        """Why a trial whose objective is `value` at `step` should stop now, or None to let it go on."""


class TrialJudge(StopRule, Protocol):
    """One trial's judge, from the sweeper: the rule for that trial, told how the trial ended."""

    def ended(self, status: str, objective: Optional[float]) -> None:
        """The trial ended with `status` (FINISHED, PRUNED, FAILED, KILLED, NOT STARTED) and its last objective."""


@runtime_checkable
class JudgedLauncher(Protocol):
    """A Hydra launcher that runs trials with a judge each (hydra/launcher=ray under `orchestrator train -m`)."""

    def launch_judged(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, judges: Sequence[TrialJudge]
    ) -> Sequence[Any]:
        """Run one batch of trials, trial i judged by judges[i]; a JobReturn per trial, in order."""
