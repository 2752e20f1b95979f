"""`orchestrator compare` on planted runs: rows, order, differing params, csv/json, the plot, errors."""

from __future__ import annotations

import csv
import io
import json
import struct

import pytest

from orchestrator.cli.commands import main
from orchestrator.cli.compare_table import RunRecord, build_rows, differing_params

ACCURACY = {
    "alpha": [(100, 0.80), (200, 0.90), (300, 0.88)],
    "beta": [(100, 0.70), (200, 0.85), (300, 0.95)],
    "gamma": [(100, 0.50), (200, 0.60)],
}
PARAMS = {
    "alpha": {"model.name": "cnn", "optim.lr": "0.01", "trainer.seed": "0"},
    "beta": {"model.name": "cnn", "optim.lr": "0.001", "trainer.seed": "0"},
    "gamma": {"model.name": "mlp", "optim.lr": "0.01", "trainer.seed": "0"},
    "delta": {"model.name": "mlp", "optim.lr": "0.1", "trainer.seed": "0"},
}


def plant(client, experiment_id, name, tags=None, start_ms=1_000_000, seconds=60.0):
    """A finished run with PARAMS[name], eval/accuracy from ACCURACY and a train/loss curve."""
    from mlflow.entities import Metric, Param

    run = client.create_run(experiment_id, start_time=start_ms, run_name=name, tags=tags or {})
    run_id = run.info.run_id
    points = ACCURACY.get(name, [])
    metrics = [Metric("eval/accuracy", value, start_ms + step, step) for step, value in points]
    metrics += [
        Metric("train/loss", 2.0 / (1 + step / 50) + len(name) / 100, start_ms + step, step)
        for step in range(10, 310, 10)
    ]
    params = [Param(key, value) for key, value in PARAMS.get(name, {}).items()]
    client.log_batch(run_id, metrics=metrics, params=params)
    client.set_terminated(run_id, "FINISHED", end_time=start_ms + int(seconds * 1000))
    return run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A SQLite store with experiment `cmp`: four runs, and a sweep `sw1` whose children are beta and gamma."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('compare') / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("cmp")
    parent = client.create_run(experiment_id, run_name="sweep-sw1", tags={"orchestrator.sweep_id": "sw1"}).info.run_id
    ids = {
        name: plant(
            client,
            experiment_id,
            name,
            tags={"mlflow.parentRunId": parent} if name in ("beta", "gamma") else None,
            seconds=60.0 + index,
        )
        for index, name in enumerate(PARAMS)
    }
    return uri, ids


def compare(capsys, uri, *args):
    capsys.readouterr()  # MLflow prints "View run ..." links while runs are planted on a server
    code = main(["compare", "--tracking-uri", uri, "--experiment", "cmp", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_table_ranks_runs_best_first_and_shows_only_differing_params(store, capsys):
    uri, ids = store
    code, out, err = compare(capsys, uri)
    assert code == 0, err
    title, header, *lines = out.splitlines()
    assert title == "eval/accuracy: higher is better (max); 4 runs, best first"
    assert header.split() == ["run", "name", "status", "wall", "model.name", "lr", "final", "best", "@step"]
    assert [line.split()[1] for line in lines[:4]] == ["beta", "alpha", "gamma", "delta"]  # the sweep parent left out
    assert lines[0].split() == [
        ids["beta"][:8],
        "beta",
        "FINISHED",
        "1",
        "min",
        "01",
        "s",
        "cnn",
        "0.001",
        "0.9500",
        "0.9500",
        "@300",
    ]
    assert lines[1].split()[-3:] == ["0.8800", "0.9000", "@200"]  # final differs from best
    assert lines[3].split()[-2:] == ["-", "-"]  # no eval/accuracy: last, without values
    assert lines[4].startswith("wall: the run's start to its end in MLflow, the time `run FINISHED in` prints")
    assert "params: lr = optim.lr" in out


def test_params_only_some_runs_set_to_one_value_leave_the_table_and_the_legend(tmp_path, capsys):
    """A cnn-only key (set by the cnn runs, one value) repeats model.name: no column, no `None` in a label."""
    from mlflow import MlflowClient

    from orchestrator.cli.compare_table import curve_labels

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("cmp")
    cnn = {"model.name": "cnn", "model.channels": "[32, 64]", "trainer.max_steps": "null", "model.compile": "false"}
    runs = {
        "a": cnn,
        "b": {**cnn, "trainer.max_steps": "30"},
        "c": {
            "model.name": "mlp",
            "model.hidden_sizes": "[128, 128]",
            "trainer.max_steps": "null",
            "model.compile": "false",
        },
    }
    for name, params in runs.items():
        PARAMS[name] = params
        try:
            plant(client, experiment_id, name)
        finally:
            del PARAMS[name]
    code, out, err = compare(capsys, uri, "--metric", "train/loss")
    assert code == 0, err
    header = out.splitlines()[1].split()
    assert header == ["run", "name", "status", "wall", "model.name", "max_steps", "final", "best", "@step"]
    assert "set in some runs only, to one value (in --format csv and json): model.channels, model.hidden_sizes" in out
    assert max(len(line) for line in out.splitlines()) <= 100
    from orchestrator.cli.compare import CompareRequest, load_records, open_client
    from orchestrator.cli.compare_table import build_rows

    request = CompareRequest(uri, "cmp", None, (), "", "train/loss", "min", None, "table")
    rows = build_rows(load_records(open_client(uri), request), "min")
    labels = curve_labels(rows)
    assert sorted(labels.values()) == [
        "model.name=cnn, max_steps=30",
        "model.name=cnn, max_steps=null",
        "model.name=mlp, max_steps=null",
    ]
    assert json.loads(compare(capsys, uri, "--metric", "train/loss", "--format", "json")[1])["differing_params"] == [
        "model.channels",
        "model.hidden_sizes",
        "model.name",
        "trainer.max_steps",
    ]


def test_a_sweep_selects_its_children_and_runs_and_filters_narrow_the_selection(store, capsys):
    uri, ids = store
    _, out, _ = compare(capsys, uri, "--sweep", "sw1", "--format", "json")
    assert [run["run_name"] for run in json.loads(out)["runs"]] == ["beta", "gamma"]
    _, out, _ = compare(capsys, uri, "--runs", ids["gamma"], ids["alpha"], "--format", "json")
    assert [run["run_name"] for run in json.loads(out)["runs"]] == ["alpha", "gamma"]
    _, out, _ = compare(capsys, uri, "--filter", "params.model.name = 'cnn'", "--format", "json")
    report = json.loads(out)
    assert [run["run_name"] for run in report["runs"]] == ["beta", "alpha"]
    assert report["differing_params"] == ["optim.lr"]


def test_csv_and_json_shapes(store, capsys):
    uri, ids = store
    _, out, _ = compare(capsys, uri, "--metric", "train/loss", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == [
        "run_id",
        "run_name",
        "status",
        "duration_s",
        "params.model.name",
        "params.optim.lr",
        "final",
        "best",
        "best_step",
    ]
    assert [row["run_name"] for row in rows] == ["beta", "alpha", "delta", "gamma"]  # min: lowest loss first
    assert rows[0]["run_id"] == ids["beta"] and rows[0]["best_step"] == "300"
    assert float(rows[0]["best"]) == pytest.approx(2.0 / 7 + 0.04) and float(rows[0]["duration_s"]) == 61.0

    _, out, _ = compare(capsys, uri, "--format", "json", "--mode", "min")
    report = json.loads(out)
    assert set(report) == {"metric", "mode", "differing_params", "runs"}
    assert (report["metric"], report["mode"], report["differing_params"]) == (
        "eval/accuracy",
        "min",
        ["model.name", "optim.lr"],
    )
    gamma = report["runs"][0]
    assert gamma == {
        "run_id": ids["gamma"],
        "run_name": "gamma",
        "status": "FINISHED",
        "duration_s": 62.0,
        "params": {"model.name": "mlp", "optim.lr": "0.01"},
        "final": 0.6,
        "best": 0.5,
        "best_step": 100,
    }


def test_the_plot_is_a_png_of_the_expected_size_with_one_curve_per_run(store, capsys, tmp_path):
    from matplotlib.image import imread

    uri, _ = store
    path = tmp_path / "accuracy.png"
    code, _, err = compare(capsys, uri, "--plot", str(path))
    assert code == 0 and f"plot: {path} (3 curves of eval/accuracy)" in err
    assert "Warning" not in err
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1000, 600)
    pixels = imread(path)
    assert pixels.shape[:2] == (600, 1000) and pixels[..., :3].std() > 0.05  # not a blank canvas


def _layout(count: int, label: str):
    """The drawn figure of `count` runs with long labels: (figure box, axes box, legend box, title box, legend texts)."""
    import warnings

    from orchestrator.cli.compare_plot import curves_figure

    records = [
        RunRecord(
            f"r{index}",
            f"run-{index}",
            "FINISHED",
            0,
            1000,
            {"x": str(index)},
            tuple((step, index + step / 100) for step in range(1, 50)),
        )
        for index in range(count)
    ]
    rows = build_rows(records, "max")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib says when a layout does not fit: that would fail here
        figure, drawn = curves_figure(
            records, rows, {row.run_id: f"{label}={row.run_id}" for row in rows}, "eval/accuracy", "max"
        )
        figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    [legend] = figure.legends
    axes = figure.axes[0]
    texts = [text.get_text() for text in legend.get_texts()]
    return (
        figure.bbox,
        axes.get_window_extent(renderer),
        legend.get_window_extent(renderer),
        axes.title.get_window_extent(renderer),
        texts,
        drawn,
        axes.get_title(),
    )


@pytest.mark.parametrize("count", [3, 12])
def test_the_legend_sits_beside_the_curves_and_everything_fits_the_canvas(count):
    long_label = "model.hidden_sizes=[128, 128], optim.lr=0.01, scaling.num_workers=2, trainer.max_epochs"
    canvas, axes, legend, title, texts, drawn, _ = _layout(count, long_label)
    assert drawn == count and len(texts) == count
    assert legend.x0 >= axes.x1  # beside the axes: it covers no curve
    for box in (axes, legend, title):  # nothing clipped
        assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1
    assert axes.width > canvas.width / 2  # the curves keep most of the width
    assert all("None" not in text for text in texts)


def test_a_legend_too_tall_for_the_canvas_names_runs_and_only_the_best(capsys):
    canvas, axes, legend, title, texts, drawn, heading = _layout(40, "a.long.key=" + "x" * 60)
    assert drawn == 40 and texts == [f"run-{index}" for index in range(39, 9, -1)]  # the best 30, best first
    assert "40 runs, the best 30 named" in heading
    assert canvas.y0 <= legend.y0 and legend.y1 <= canvas.y1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experiment", "nope"], "--experiment 'nope' does not exist; experiments: cmp, Default"),
        (["--sweep", "sw9"], "--sweep 'sw9' is not in experiment 'cmp'; sweeps there: sw1"),
        (
            ["--metric", "eval/f1"],
            "--metric 'eval/f1': none of the 4 selected runs has it; their metrics: eval/accuracy, train/loss",
        ),
        (["--runs", "0123456789abcdef"], "--runs: no run with id '0123456789abcdef'"),
        (
            ["--filter", "params.model = 'cnn'"],
            "no runs match in experiment 'cmp' with --filter \"params.model = 'cnn'\" "
            "(4 runs without it; their params: model.name, optim.lr, trainer.seed)",
        ),
        (["--filter", "bogus ="], "--filter 'bogus =' is not valid: Invalid clause(s) in filter string"),
    ],
)
def test_unknown_names_exit_2_saying_what_exists(store, capsys, args, message):
    uri, _ = store
    code, out, err = compare(capsys, uri, *args)
    assert code == 2 and out == ""
    assert message in err


def test_a_missing_store_is_an_error_and_is_not_created(tmp_path, capsys):
    missing = tmp_path / "absent.db"
    assert main(["compare", "--tracking-uri", f"sqlite:///{missing}"]) == 2
    assert f"no MLflow store at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_compare_reads_runs_from_a_tracking_server(mlflow_server, capsys):
    from mlflow import MlflowClient

    url = mlflow_server.spec.url
    client = MlflowClient(url)
    experiment_id = client.create_experiment("cmp")
    ids = {name: plant(client, experiment_id, name) for name in ("alpha", "gamma")}
    code, out, err = compare(capsys, url, "--format", "json")
    assert code == 0, err
    assert [(run["run_id"], run["best"]) for run in json.loads(out)["runs"]] == [
        (ids["alpha"], 0.9),
        (ids["gamma"], 0.6),
    ]


def test_runs_lacking_a_param_count_as_differing_and_nan_never_wins():
    records = [
        RunRecord("a", "a", "FINISHED", 0, 1000, {"x": "1", "y": "2"}, ((1, float("nan")), (2, 0.5))),
        RunRecord("b", "b", "FINISHED", 0, None, {"x": "1"}, ((1, 0.4),)),
    ]
    assert differing_params(records) == ["y"]
    rows = build_rows(records, "max")
    assert [(row.run_id, row.best, row.duration_s) for row in rows] == [("a", 0.5, 1.0), ("b", 0.4, None)]
