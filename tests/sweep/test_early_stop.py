"""The median stopping rule, on objective curves given by hand."""

from __future__ import annotations

from orchestrator.sweep.early_stop import MedianStoppingRule


def test_a_trial_worse_than_the_median_of_completed_trials_at_that_step_stops():
    rule = MedianStoppingRule("eval/accuracy", "maximize", min_trials=2)
    rule.completed({45: 0.80, 90: 0.90})
    assert rule.verdict(45, 0.10) is None  # one completed trial is not enough
    rule.completed({45: 0.70, 90: 0.95})
    rule.completed({45: 0.60})
    assert rule.verdict(45, 0.71) is None  # the median at 45 is 0.70: better goes on
    assert rule.verdict(45, 0.70) is None  # equal is not worse
    reason = rule.verdict(45, 0.65)
    assert reason == (
        "stopped early: eval/accuracy=0.65 at step 45 is worse than the median 0.7 of 3 completed "
        "trials (sweep.early_stop=median)"
    )
    assert rule.verdict(90, 0.91) == rule.verdict(90, 0.91) is not None  # median of the two with a value at 90
    assert rule.verdict(50, 0.0) is None  # no completed trial has a value at that step


def test_minimize_stops_what_is_above_the_median():
    rule = MedianStoppingRule("eval/loss", "minimize", min_trials=1)
    rule.completed({10: 0.5})
    assert rule.verdict(10, 0.4) is None
    assert "eval/loss=0.6 at step 10 is worse than the median 0.5 of 1 completed trial " in rule.verdict(10, 0.6)
