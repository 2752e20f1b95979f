"""Trial records: what a sweep chose per trial, the keys trials share, the best trial and the summary table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from orchestrator.sweep.trials import (
    FAILED,
    FINISHED,
    KILLED,
    NOT_STARTED,
    STOPPED,
    TrialRecord,
    best_trial,
    counts,
    shared_key_problems,
    summary_table,
    sweep_status,
    varying,
)
from tests.helpers import job_config


def _record(number, status, objective=None, overrides=("model=mlp", "optim.lr=0.001")):
    return TrialRecord(
        number=number,
        overrides=overrides,
        status=status,
        objective=objective,
        duration_s=12.34,
        run_id=f"run{number}",
        started_at=None if status == NOT_STARTED else 1.0,
    )


def test_the_overrides_a_sweep_chose_are_those_of_keys_not_fixed_on_its_command_line():
    fixed = {"model", "+extra"}
    assert varying(("model=mlp", "optim.lr=0.001", "+extra=1", "data=synthetic"), fixed) == (
        "optim.lr=0.001",
        "data=synthetic",
    )


def test_trials_share_the_sweeps_cluster_store_experiment_and_objective_and_start_fresh(tmp_path: Path):
    sweep = job_config(["model=mlp"])
    assert shared_key_problems(sweep, job_config(["model=cnn", "optim.lr=0.1"])) == []
    trial = job_config(
        ["tracking.experiment=other", "sweep.direction=minimize", "cluster.num_cpus=2", "trainer.resume=latest"]
    )
    problems = shared_key_problems(sweep, trial)
    assert [problem.split(" ")[0] for problem in problems] == [
        "cluster.num_cpus=2",
        "tracking.experiment=other",
        "sweep.direction=minimize",
        "trainer.resume=latest",
    ]
    assert "every trial of a sweep uses the sweep's tracking.experiment=orchestrator" in problems[1]


def test_the_best_trial_is_a_finished_one_in_the_sweeps_direction():
    records = [
        _record(0, FINISHED, 0.8),
        _record(1, STOPPED, 0.1),
        _record(2, FINISHED, 0.9),
        _record(3, FAILED),
        _record(4, FINISHED, float("nan")),
    ]
    assert best_trial(records, "maximize").number == 2
    assert best_trial(records, "minimize").number == 0
    assert best_trial([_record(0, FAILED)], "maximize") is None


def test_the_sweep_fails_with_a_failed_trial_and_is_killed_when_interrupted():
    finished, stopped, failed = _record(0, FINISHED, 0.8), _record(1, STOPPED, 0.1), _record(2, FAILED)
    assert sweep_status([finished, stopped], interrupted=False) == FINISHED
    assert sweep_status([finished, failed], interrupted=False) == FAILED
    assert sweep_status([finished, failed], interrupted=True) == KILLED
    assert counts([finished, failed, _record(3, FINISHED, 0.5)]) == {FINISHED: 2, FAILED: 1}


def test_the_summary_table_has_one_aligned_row_per_trial_in_order():
    records = [
        _record(1, KILLED, 0.25, ("model=mlp", "optim.lr=0.003")),
        _record(0, FINISHED, 0.96125),
        dataclasses.replace(_record(2, NOT_STARTED, overrides=("model=mlp", "optim.lr=0.01")), run_id=None),
    ]
    assert summary_table(records, {"model"}, "eval/accuracy") == (
        "trial  overrides       status       eval/accuracy  duration  run\n"
        "0      optim.lr=0.001  FINISHED     0.9613         12.3 s    run0\n"
        "1      optim.lr=0.003  KILLED       0.2500         12.3 s    run1\n"
        "2      optim.lr=0.01   NOT STARTED  -              -         -\n"
    )
