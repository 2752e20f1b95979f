"""The observers as one: each told, in order, of the kinds of reports it takes."""

from __future__ import annotations

from orchestrator.lifecycle.observers import Observers
from orchestrator.lifecycle.rank_reports import CheckpointReport, LogReport, MetricsReport, StepReport


class _Heard:
    def __init__(self, name, heard, kinds=None):
        self.name, self.heard = name, heard
        if kinds is not None:
            self.report_kinds = kinds

    def group_started(self, specs):
        pass

    def report(self, world_rank, report):
        self.heard.append((self.name, world_rank, type(report).__name__))

    def job_ended(self, outcome):
        pass


class _Checkpoint(CheckpointReport):
    """A kind of checkpoint report: taken by whoever takes checkpoint reports."""


def test_an_observer_that_names_its_kinds_of_reports_hears_only_those_and_the_others_hear_all_in_order():
    heard: list = []
    observers = Observers(
        [_Heard("all", heard), _Heard("steps", heard, (StepReport,)), _Heard("records", heard, (CheckpointReport,))]
    )
    for report in [
        StepReport(3, 1, 9, 0, 0.1, 1),
        MetricsReport(1, {}),
        _Checkpoint(2, "/c"),
        StepReport(4, 1, 9, 0, 0.1, 1),
    ]:
        observers.report(getattr(report, "world_rank", 0), report)
    observers.report(0, LogReport(0, "stdout", "hi"))
    assert heard == [
        ("all", 3, "StepReport"),
        ("steps", 3, "StepReport"),
        ("all", 0, "MetricsReport"),
        ("all", 0, "_Checkpoint"),
        ("records", 0, "_Checkpoint"),
        ("all", 4, "StepReport"),
        ("steps", 4, "StepReport"),
        ("all", 0, "LogReport"),
    ]
