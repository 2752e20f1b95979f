"""Sweeps through `orchestrator train -m` on the session's Ray cluster, checked in the MLflow store they write.

Each test runs the command in this process (the CLI's `main`, so Hydra's multirun, the launcher plugin
and the exit code are the real ones); the sweep's driver reuses the session's Ray connection. The tests
share one SQLite store (creating one costs seconds), each in an experiment of its own.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys

import pytest
import yaml

from orchestrator.cli.commands import main
from tests.helpers import assert_no_job_resources, owned_process, wait_until

TINY = [
    "model=mlp",
    "scaling.num_workers=1",
    "trainer.max_epochs=1",
    "tracking.log_model=false",
    "monitor.enabled=false",
    "failure.max_restarts=0",
]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The tracking URI of the module's MLflow store."""
    return f"sqlite:///{tmp_path_factory.mktemp('sweeps')}/mlflow.db"


def _sweep(cluster, store, tmp_path, monkeypatch, *overrides: str) -> int:
    monkeypatch.chdir(tmp_path)
    return main(
        [
            "train",
            "-m",
            *TINY,
            f"cluster.address={cluster.address}",
            f"hydra.sweep.dir={tmp_path}/sweep",
            f"tracking.uri={store}",
            f"tracking.experiment={tmp_path.name}",
            *overrides,
        ]
    )


def _runs(store, tmp_path):
    """(client, parent, children by trial number) of the one sweep in the test's experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(tmp_path.name).experiment_id])
    [parent] = [run for run in runs if "orchestrator.sweep_id" in run.data.tags]
    children = {
        int(run.data.tags["orchestrator.trial"]): run
        for run in runs
        if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert len(runs) == 1 + len(children), "every run of the sweep is its parent or a child of it"
    return client, parent, children


def _most_at_once(children) -> int:
    events = sorted([(run.info.start_time, 1) for run in children] + [(run.info.end_time, -1) for run in children])
    running = most = 0
    for _, change in events:  # an end at the same millisecond as a start comes first
        running += change
        most = max(most, running)
    return most


def test_a_four_trial_sweep_runs_two_trials_at_a_time_as_children_of_one_parent(
    ray_cluster, store, tmp_path, monkeypatch, capsys
):
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    assert "RayLauncher" in [plugin.__name__ for plugin in Plugins.instance().discover(Launcher)]
    code = _sweep(
        ray_cluster,
        store,
        tmp_path,
        monkeypatch,
        "optim.lr=1e-3,3e-3",
        "optim.name=adamw,sgd",
        "hydra.launcher.max_concurrent=2",
    )
    out = capsys.readouterr().out
    assert code == 0, out
    # what the wait between the trial list and the launch is for is said before it
    assert out.index("4 trials checked; starting Ray and the sweep's MLflow run") < out.index("Launching 4 trials")

    client, parent, children = _runs(store, tmp_path)
    sweep_id = parent.data.tags["orchestrator.sweep_id"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["orchestrator.sweeper"] == "basic"
    assert "optim.lr=1e-3,3e-3 optim.name=adamw,sgd" in parent.data.tags["orchestrator.sweep.overrides"]
    assert sorted(children) == [0, 1, 2, 3]
    chosen = set()
    for run in children.values():
        params, tags = run.data.params, run.data.tags
        assert run.info.status == "FINISHED" and 0 < run.data.metrics["eval/accuracy"] <= 1
        assert tags["orchestrator.override.optim.lr"] == params["optim.lr"]
        assert tags["orchestrator.override.optim.name"] == params["optim.name"]
        assert params["model.name"] == "mlp" and "orchestrator.override.model" not in tags  # fixed, not swept
        assert tags["orchestrator.trial.sweep_id"] == sweep_id
        chosen.add((params["optim.lr"], params["optim.name"]))
    assert chosen == {("0.001", "adamw"), ("0.001", "sgd"), ("0.003", "adamw"), ("0.003", "sgd")}

    runs = list(children.values())
    assert _most_at_once(runs) == 2
    trials_s = sum(run.info.end_time - run.info.start_time for run in runs) / 1000
    first_to_last_s = (max(run.info.end_time for run in runs) - min(run.info.start_time for run in runs)) / 1000
    assert first_to_last_s < 0.75 * trials_s, "two trials at a time should overlap, not run one after the other"
    assert f"sweep {sweep_id}: 4 trials" in out and out.count(" FINISHED ") == 4

    assert (
        main(
            ["compare", "--sweep", sweep_id, "--tracking-uri", store, "--experiment", tmp_path.name, "--format", "json"]
        )
        == 0
    )
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert sorted(row["run_id"] for row in listed) == sorted(run.info.run_id for run in runs)
    assert_no_job_resources()


def test_a_failing_trial_is_recorded_failed_the_others_finish_and_the_exit_code_says_so(
    ray_cluster, store, tmp_path, monkeypatch, capsys
):
    blocker = tmp_path / "a-file"
    blocker.write_text("checkpoints cannot go below a regular file")
    code = _sweep(ray_cluster, store, tmp_path, monkeypatch, f"checkpoint.dir=checkpoints,{blocker}/checkpoints")
    out = capsys.readouterr().out
    assert code == 1, out
    _, parent, children = _runs(store, tmp_path)
    assert children[0].info.status == "FINISHED"
    assert children[1].info.status == "FAILED"
    assert "NotADirectoryError" in children[1].data.tags["orchestrator.error"]
    assert parent.info.status == "FAILED" and parent.data.tags["orchestrator.error"] == "trial 1 failed"
    assert parent.data.metrics["sweep/finished"] == 1 and parent.data.metrics["sweep/failed"] == 1
    assert_no_job_resources()


def test_the_optuna_sweeper_gets_each_trials_objective_and_it_is_recorded(ray_cluster, store, tmp_path, monkeypatch):
    code = _sweep(
        ray_cluster,
        store,
        tmp_path,
        monkeypatch,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=4",
        "hydra.sweeper.sampler.seed=0",
        "optim.lr=tag(log,interval(1e-4,1e-1))",
    )
    assert code == 0
    _, parent, children = _runs(store, tmp_path)
    assert sorted(children) == [0, 1, 2, 3] and parent.data.tags["orchestrator.sweeper"] == "optuna"
    accuracy = {run.info.run_id: run.data.metrics["eval/accuracy"] for run in children.values()}
    assert len({float(run.data.params["optim.lr"]) for run in children.values()}) == 4
    # what Optuna was told: its best trial is the child with the highest recorded accuracy (sweep.direction=maximize)
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    best_run = parent.data.tags["orchestrator.sweep.best_run_id"]
    assert results["best_value"] == pytest.approx(max(accuracy.values())) == pytest.approx(accuracy[best_run])
    best_child = next(run for run in children.values() if run.info.run_id == best_run)
    assert results["best_params"]["optim.lr"] == pytest.approx(float(best_child.data.params["optim.lr"]))
    assert parent.data.metrics["sweep/best_objective"] == pytest.approx(results["best_value"])
    assert_no_job_resources()


def test_median_early_stopping_stops_a_trial_that_does_worse_than_the_completed_ones(
    ray_cluster, store, tmp_path, monkeypatch
):
    # one at a time: the good trial (0) completes first; the planted bad one (1, lr=1e-6) hardly learns
    code = _sweep(
        ray_cluster,
        store,
        tmp_path,
        monkeypatch,
        "optim.lr=3e-3,1e-6",
        "trainer.max_epochs=2",
        "sweep.early_stop=median",
        "sweep.early_stop_min_trials=1",
        "hydra.launcher.max_concurrent=1",
    )
    assert code == 0  # a stopped trial is no failure
    client, parent, children = _runs(store, tmp_path)
    good, bad = children[0], children[1]
    assert good.info.status == "FINISHED" and "orchestrator.early_stopped" not in good.data.tags
    assert [m.step for m in client.get_metric_history(good.info.run_id, "eval/accuracy")] == [45, 90]
    assert bad.info.status == "KILLED"
    reason = bad.data.tags["orchestrator.early_stopped"]
    assert "at step 45 is worse than the median" in reason and "sweep.early_stop=median" in reason
    assert [m.step for m in client.get_metric_history(bad.info.run_id, "eval/accuracy")] == [45]
    assert max(m.step for m in client.get_metric_history(bad.info.run_id, "train/loss")) < 90
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep/stopped"] == 1
    assert_no_job_resources()


def test_a_sweep_of_a_script_takes_its_reported_objective_and_median_stopping_stops_the_bad_trial(
    ray_cluster, store, tmp_path, monkeypatch
):
    from tests.worker.test_script_mode import API_SCRIPT

    # one at a time: trial 0 (lr 0.1) completes first; trial 1 (lr 10) diverges from step 2 on
    run = f"--out {tmp_path / 'weights.pt'} --steps 20 --step-s 0.2 --lr"
    code = _sweep(
        ray_cluster,
        store,
        tmp_path,
        monkeypatch,
        "entrypoint=script",
        f"script.path={API_SCRIPT}",
        f"script.argv='{run} 0.1','{run} 10'",
        "sweep.objective=train/loss",
        "sweep.direction=minimize",
        "sweep.early_stop=median",
        "sweep.early_stop_min_trials=1",
        "hydra.launcher.max_concurrent=1",
    )
    assert code == 0
    client, parent, children = _runs(store, tmp_path)
    good, bad = children[0], children[1]
    good_curve = client.get_metric_history(good.info.run_id, "train/loss")
    assert good.info.status == "FINISHED" and sorted(m.step for m in good_curve) == list(range(1, 21))
    assert parent.data.metrics["sweep/best_objective"] == pytest.approx(max(good_curve, key=lambda m: m.step).value)
    assert bad.info.status == "KILLED"
    assert "train/loss=" in bad.data.tags["orchestrator.early_stopped"]
    assert max(m.step for m in client.get_metric_history(bad.info.run_id, "train/loss")) < 20
    assert parent.data.metrics["sweep/stopped"] == 1
    assert_no_job_resources()


PLANTED_LRS = [1e-2, 5e-3, 1e-6, 8e-3, 1e-6, 3e-3]
"""The ASHA sweep's trials in order: two good ones first (they set the rungs), then a bad one (lr 1e-6
hardly learns) beside a good one, twice."""
SHORT_EPOCHS = ["trainer.max_epochs=2", "data.batch_size=256"]
"""Two evaluations per trial (at the end of each epoch), in few steps: a trial can be pruned at the first."""


def test_asha_prunes_the_planted_bad_trials_at_their_first_evaluation_and_records_them_pruned(
    ray_cluster, store, tmp_path, monkeypatch, capsys
):
    import optuna
    from optuna.trial import TrialState

    # the planted trials go into the study first (enqueued); the sweep resumes it and asks for them in order
    storage = f"sqlite:///{tmp_path}/optuna.db"
    planted = optuna.create_study(study_name="asha", storage=storage, direction="maximize")
    for lr in PLANTED_LRS:
        planted.enqueue_trial({"optim.lr": lr})
    code = _sweep(
        ray_cluster,
        store,
        tmp_path,
        monkeypatch,
        *SHORT_EPOCHS,
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.study_name=asha",
        "optim.lr=tag(log,interval(1e-7,1e-1))",
        "sweep.early_stop=asha",
        f"sweep.storage={storage}",
        "sweep.resume=true",
    )
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]  # a pruned trial is no failure
    client, parent, children = _runs(store, tmp_path)
    assert [float(children[number].data.params["optim.lr"]) for number in range(6)] == PLANTED_LRS
    study = optuna.load_study(study_name="asha", storage=storage)
    states = {trial.number: trial.state for trial in study.trials}
    assert states[2] == states[4] == TrialState.PRUNED
    assert states[0] == TrialState.COMPLETE  # the first at every rung goes on
    assert set(states.values()) <= {TrialState.COMPLETE, TrialState.PRUNED}
    finished = [number for number, state in states.items() if state == TrialState.COMPLETE]
    pruned = [number for number, state in states.items() if state == TrialState.PRUNED]

    def last_step(run, metric):
        return max(m.step for m in client.get_metric_history(run.info.run_id, metric))

    full = {last_step(children[number], "train/loss") for number in finished}
    assert len(full) == 1  # every finished trial trained to its end
    for number in pruned:
        run = children[number]
        assert run.info.status == "KILLED" and "orchestrator.early_stopped" not in run.data.tags
        reason = run.data.tags["orchestrator.pruned"]
        assert "sweep.early_stop=asha: Optuna's SuccessiveHalvingPruner" in reason
        assert study.trials[number].user_attrs["orchestrator.status"] == "PRUNED"
        assert last_step(run, "train/loss") < min(full)  # stopped before its end
        assert len(client.get_metric_history(run.info.run_id, "eval/accuracy")) == 1  # at its first evaluation
    for number in finished:
        assert children[number].info.status == "FINISHED"
        assert study.trials[number].value == pytest.approx(children[number].data.metrics["eval/accuracy"])
    assert "6 trials in" in out and f"{len(finished)} FINISHED, {len(pruned)} PRUNED" in out
    assert out.count(" PRUNED  ") == len(pruned)  # the summary table's status column
    assert parent.data.metrics["sweep/pruned"] == len(pruned)
    assert parent.data.metrics["sweep/finished"] == len(finished)
    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(study.best_value) and results["study_name"] == "asha"
    assert_no_job_resources()


def _complete_trials(database) -> int:
    """COMPLETE trials in an Optuna SQLite storage, read without writing to it (0 before its tables exist)."""
    try:  # closed at once: an open read would hold SQLite's shared lock and make the sweep's writes wait
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
            return connection.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchall()[0][0]
    except sqlite3.OperationalError:  # no file or no tables yet
        return 0


def test_an_optuna_sweep_interrupted_with_ctrl_c_resumes_keeping_its_completed_trials(
    ray_cluster, store, tmp_path, monkeypatch, capsys
):
    import optuna
    from optuna.trial import TrialState

    database = tmp_path / "optuna.db"
    sweep = [
        *TINY,
        f"cluster.address={ray_cluster.address}",
        f"tracking.uri={store}",
        f"tracking.experiment={tmp_path.name}",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.sampler.seed=0",
        "optim.lr=tag(log,interval(1e-4,1e-1))",
        f"sweep.storage=sqlite:///{database}",
    ]
    command = [sys.executable, "-m", "orchestrator", "train", "-m", *sweep, f"hydra.sweep.dir={tmp_path}/first"]
    with owned_process(command, cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as first:
        wait_until(lambda: first.poll() is not None or _complete_trials(database) >= 1, 240, "a first completed trial")
        assert first.poll() is None, first.communicate()[1][-3000:]
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=120)
        assert first.returncode == 130, stderr[-3000:]
    [name] = optuna.get_all_study_names(f"sqlite:///{database}")  # the name derived from the sweep
    before = optuna.load_study(study_name=name, storage=f"sqlite:///{database}").trials
    completed = [(t.number, t.params, t.value) for t in before if t.state == TrialState.COMPLETE]
    assert completed and all(t.state in (TrialState.COMPLETE, TrialState.FAIL) for t in before)
    interrupted = [t for t in before if t.state == TrialState.FAIL]
    assert all(t.user_attrs["orchestrator.status"] in ("KILLED", "NOT STARTED") for t in interrupted)

    monkeypatch.chdir(tmp_path)
    code = main(["train", "-m", *sweep, "sweep.resume=true", f"hydra.sweep.dir={tmp_path}/second"])
    assert code == 0, capsys.readouterr().out
    after = optuna.load_study(study_name=name, storage=f"sqlite:///{database}").trials
    assert [(t.number, t.params, t.value) for t in after if t.number in {c[0] for c in completed}] == completed
    assert sum(t.state == TrialState.COMPLETE for t in after) == 3  # the study reached n_trials
    new = [t.number for t in after if t.number >= len(before)]
    assert len(new) == 3 - len(completed) and all(after[number].state == TrialState.COMPLETE for number in new)
    # the sampler's seed moved on: the resumed sweep does not replay the values the first one tried
    assert not {after[number].params["optim.lr"] for number in new} & {t.params.get("optim.lr") for t in before}
    # the resumed sweep's trials are numbered as in the study
    from mlflow import MlflowClient

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(tmp_path.name).experiment_id])
    parents = [run for run in runs if "orchestrator.sweep_id" in run.data.tags]
    assert sorted(run.info.status for run in parents) == ["FINISHED", "KILLED"]
    [resumed] = [run for run in parents if run.info.status == "FINISHED"]
    numbers = sorted(
        int(run.data.tags["orchestrator.trial"])
        for run in runs
        if run.data.tags.get("mlflow.parentRunId") == resumed.info.run_id
    )
    assert numbers == new
    assert_no_job_resources()
