"""sweep.early_stop as Optuna pruners, and one trial's judge against a real in-memory Optuna study."""

from __future__ import annotations

import threading

import optuna
import pytest
from optuna.pruners import HyperbandPruner, MedianPruner, NopPruner, SuccessiveHalvingPruner
from optuna.trial import TrialState

from orchestrator.config.schema import SweepConfig
from orchestrator.sweep.optuna_settings import STATUS_ATTR
from orchestrator.sweep.pruning import OptunaJudge, make_pruner
from orchestrator.sweep.trials import PRUNED, PRUNED_TAG


@pytest.mark.parametrize(
    ("early_stop", "pruner"),
    [("none", NopPruner), ("median", MedianPruner), ("asha", SuccessiveHalvingPruner), ("hyperband", HyperbandPruner)],
)
def test_each_early_stop_rule_is_its_optuna_pruner(early_stop, pruner):
    assert type(make_pruner(SweepConfig(early_stop=early_stop))) is pruner


def test_median_takes_early_stop_min_trials_as_its_startup_trials_and_asha_rungs_start_at_step_1():
    median = make_pruner(SweepConfig(early_stop="median", early_stop_min_trials=3))
    assert median._n_startup_trials == 3 and median._n_warmup_steps == 0
    assert make_pruner(SweepConfig(early_stop="asha"))._min_resource == 1


def _judged_study(early_stop: str) -> tuple[optuna.Study, threading.Lock, SweepConfig]:
    sweep = SweepConfig(early_stop=early_stop)
    return optuna.create_study(direction="maximize", pruner=make_pruner(sweep)), threading.Lock(), sweep


def test_asha_prunes_a_trial_worse_than_the_one_before_it_at_the_same_rung_and_the_study_records_it_pruned():
    study, lock, sweep = _judged_study("asha")
    good = OptunaJudge(study, study.ask(), lock, sweep)
    assert good.verdict(45, 0.9) is None  # the first at its rungs goes on
    assert good.verdict(90, 0.95) is None
    good.ended("FINISHED", 0.95)
    bad = OptunaJudge(study, study.ask(), lock, sweep)
    assert (bad.stopped_status, bad.stopped_tag) == (PRUNED, PRUNED_TAG)
    reason = bad.verdict(45, 0.06)
    assert reason == "pruned: eval/accuracy=0.06 at step 45 (sweep.early_stop=asha: Optuna's SuccessiveHalvingPruner)"
    bad.ended("PRUNED", 0.06)
    bad.ended("NOT STARTED", None)  # told once: a later call (the sweeper's clean-up) changes nothing
    assert bad.verdict(90, 0.5) is None  # an ended trial reports nothing more
    first, second = study.trials
    assert (first.state, first.value, first.user_attrs[STATUS_ATTR]) == (TrialState.COMPLETE, 0.95, "FINISHED")
    assert (second.state, second.value, second.user_attrs[STATUS_ATTR]) == (TrialState.PRUNED, 0.06, "PRUNED")
    assert first.intermediate_values == {45: 0.9, 90: 0.95} and second.intermediate_values == {45: 0.06}


def test_without_a_pruner_nothing_is_pruned_and_failed_or_interrupted_trials_are_failed():
    study, lock, sweep = _judged_study("none")
    judges = [OptunaJudge(study, study.ask(), lock, sweep) for _ in range(3)]
    assert judges[0].verdict(45, 0.0) is None
    judges[0].ended("FAILED", None)
    judges[1].ended("KILLED", 0.4)
    judges[2].ended("NOT STARTED", None)
    assert [trial.state for trial in study.trials] == [TrialState.FAIL] * 3
    assert [trial.user_attrs[STATUS_ATTR] for trial in study.trials] == ["FAILED", "KILLED", "NOT STARTED"]


def test_a_ctrl_c_while_a_result_is_told_waits_until_the_study_has_it(monkeypatch):
    import signal

    study, lock, sweep = _judged_study("none")
    judge = OptunaJudge(study, study.ask(), lock, sweep)
    tell = study.tell

    def interrupted_tell(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # between the status attribute and the result, handled at once
        return tell(*args, **kwargs)

    monkeypatch.setattr(study, "tell", interrupted_tell)
    # Python's own Ctrl-C handler: a suite started in the background inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            judge.ended("FINISHED", 0.5)
    finally:
        signal.signal(signal.SIGINT, previous)
    [trial] = study.trials
    assert (trial.state, trial.value, trial.user_attrs[STATUS_ATTR]) == (TrialState.COMPLETE, 0.5, "FINISHED")
