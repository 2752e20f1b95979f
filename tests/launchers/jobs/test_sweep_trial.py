"""A trial's side of a sweep without a cluster: its prefixed lines, its tags, its objective and early stop."""

from __future__ import annotations

import io
import threading

from launchers.jobs.sweep_trial import LinePrefixer, TrialWatch, trial_tags
from orchestrator.lifecycle.rank_reports import MetricsReport, StepReport
from orchestrator.sweep.early_stop import MedianStoppingRule
from orchestrator.sweep.trials import EARLY_STOP_TAG, TrialSpec
from orchestrator.tracking.metrics_sink import InMemorySink
from tests.helpers import compose_job


def test_trial_lines_are_whole_and_prefixed_and_a_redrawn_line_becomes_a_line():
    stream = io.StringIO()
    lines = LinePrefixer(stream, "[trial 3] ", threading.Lock())
    lines.write("epoch 1 | step 10/45")
    assert stream.getvalue() == ""
    lines.write("\r\x1b[Kepoch 1 | step 45/45\nrun FINISHED\n")
    assert (
        stream.getvalue() == "[trial 3] epoch 1 | step 10/45\n[trial 3] epoch 1 | step 45/45\n[trial 3] run FINISHED\n"
    )
    assert not lines.isatty()


def test_a_trials_tags_name_it_its_sweep_and_each_value_the_sweep_chose(tmp_path):
    spec = TrialSpec(number=2, overrides=("model=mlp", "optim.lr=0.003", "+tag.x=1"), job=compose_job([], tmp_path))
    assert trial_tags(spec, "20261122-1", {"model"}) == {
        "orchestrator.trial": "2",
        "orchestrator.trial.sweep_id": "20261122-1",
        "orchestrator.override.optim.lr": "0.003",
        "orchestrator.override.tag.x": "1",
    }


def _step(step, total=90):
    return StepReport(world_rank=0, step=step, total_steps=total, epoch=0, step_time_s=0.01, steps_timed=10)


def test_the_watch_follows_the_objective_and_stops_a_trial_worse_than_the_median_once():
    rule = MedianStoppingRule("eval/accuracy", "maximize", min_trials=1)
    rule.completed({45: 0.9, 90: 0.95})
    watch, sink = TrialWatch("eval/accuracy", rule), InMemorySink()
    assert watch.observers(sink) == [watch]
    watch.report(0, _step(45))
    watch.report(0, MetricsReport(45, {"train/loss": 2.0}))
    assert watch.last is None
    watch.report(0, MetricsReport(45, {"eval/accuracy": 0.5, "eval/loss": 1.5}))
    [reason] = watch.stop_requests.take()
    assert reason.startswith("stopped early: eval/accuracy=0.5 at step 45") and watch.stopped_early == reason
    assert sink.tags[EARLY_STOP_TAG] == reason
    watch.report(0, MetricsReport(50, {"eval/accuracy": 0.1}))
    assert watch.stop_requests.take() == [] and watch.curve == {45: 0.5, 50: 0.1} and watch.last == 0.1


def test_the_last_evaluation_never_stops_a_trial_and_without_a_rule_nothing_does():
    rule = MedianStoppingRule("eval/accuracy", "maximize", min_trials=1)
    rule.completed({90: 0.95})
    watch = TrialWatch("eval/accuracy", rule)
    watch.observers(InMemorySink())
    watch.report(0, _step(90, total=90))
    watch.report(0, MetricsReport(90, {"eval/accuracy": 0.2}))
    assert watch.stop_requests.take() == [] and watch.stopped_early is None and watch.last == 0.2
    free = TrialWatch("eval/accuracy", None)
    free.observers(InMemorySink())
    free.report(0, MetricsReport(45, {"eval/accuracy": 0.0}))
    assert free.stop_requests.take() == []
