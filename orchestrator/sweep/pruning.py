"""sweep.early_stop under hydra/sweeper=optuna: Optuna's pruners, and the judge that feeds one trial's evaluations.

median -> MedianPruner (sweep.early_stop_min_trials startup trials); asha -> SuccessiveHalvingPruner with
min_resource 1 and Optuna's reduction factor 4: rungs at steps 1, 4, 16, 64, ..., a trial is compared at
its first evaluation past each rung with the trials that reached that rung before it, and goes on only
while it is in their best quarter (the best of them while fewer than 4 have); hyperband ->
HyperbandPruner with Optuna's defaults (min_resource 1, max_resource auto: the first completed trial's
last step, reduction factor 3); none -> NopPruner. Optuna's own auto min_resource for asha would wait
for a completed trial and leave every trial that ran before it out of the rungs, so the first wave of
trials would judge nothing. Optuna is imported inside the functions: `import orchestrator` stays light.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Optional

from orchestrator.config.schema import SweepConfig
from orchestrator.interrupts import interrupts_held
from orchestrator.sweep.optuna_settings import STATUS_ATTR, optuna_outcome
from orchestrator.sweep.trials import PRUNED, PRUNED_TAG

ASHA_MIN_RESOURCE = 1
"""The step of asha's first rung."""

if TYPE_CHECKING:
    from optuna.pruners import BasePruner
    from optuna.study import Study
    from optuna.trial import Trial


def make_pruner(sweep: SweepConfig) -> BasePruner:
    """The Optuna pruner of sweep.early_stop."""
    from optuna.pruners import HyperbandPruner, MedianPruner, NopPruner, SuccessiveHalvingPruner

    if sweep.early_stop == "median":
        return MedianPruner(n_startup_trials=sweep.early_stop_min_trials, n_warmup_steps=0)
    if sweep.early_stop == "asha":
        return SuccessiveHalvingPruner(min_resource=ASHA_MIN_RESOURCE)
    if sweep.early_stop == "hyperband":
        return HyperbandPruner()
    return NopPruner()


class OptunaJudge:
    """One Optuna trial's judge: reports each evaluation to the trial, and tells the study how the trial ended.

    Satisfies orchestrator.sweep.judging.TrialJudge. `verdict` runs on the trial's controller thread and
    `ended` on the sweep's, beside the other trials' judges: every call into the study takes `lock`, the
    one lock of the study, as a storage (SQLite above all) takes one writer at a time.
    """

    stopped_status = PRUNED
    stopped_tag = PRUNED_TAG

    def __init__(self, study: Study, trial: Trial, lock: AbstractContextManager[Any], sweep: SweepConfig):
        self.study = study
        self.trial = trial
        self.lock = lock
        self.sweep = sweep
        self.told: Optional[str] = None
        """The status the study was told (None until the trial ended)."""

    def verdict(self, step: int, value: float) -> Optional[str]:
        """trial.report(value, step), then trial.should_prune(): why the trial is pruned, or None."""
        with self.lock:
            if self.told is not None:
                return None
            self.trial.report(value, step)
            if not self.trial.should_prune():
                return None
        return (
            f"pruned: {self.sweep.objective}={value:.4g} at step {step} "
            f"(sweep.early_stop={self.sweep.early_stop}: Optuna's {type(self.study.pruner).__name__})"
        )

    def ended(self, status: str, objective: Optional[float]) -> None:
        """Tell the study: COMPLETE with the objective, PRUNED, or FAIL; once, whoever calls first."""
        from optuna.trial import TrialState

        state, value = optuna_outcome(status, objective)
        with interrupts_held(), self.lock:  # a Ctrl-C between the two writes would leave the trial RUNNING
            if self.told is not None:
                return
            self.trial.set_user_attr(STATUS_ATTR, status)
            self.study.tell(self.trial, value, state=TrialState[state])
            self.told = status
