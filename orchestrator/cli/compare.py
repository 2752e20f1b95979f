"""`orchestrator compare`: select runs from an MLflow store or server, show how they differ, plot a metric.

Selection: every run of an experiment (sweep parents left out), a sweep's children (the parent run is
tagged `orchestrator.sweep_id`; its children carry `mlflow.parentRunId`), or explicit run ids; an
MLflow filter string narrows any of them. Ranking and rendering live in `compare_table.py` (pure).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from orchestrator.cli.compare_table import FORMATS, MODES, RunRecord, build_rows, curve_labels, default_mode, render
from orchestrator.errors import OrchestratorError

SWEEP_TAG = "orchestrator.sweep_id"
PARENT_TAG = "mlflow.parentRunId"
DEFAULT_EXPERIMENT = "orchestrator"
DEFAULT_METRIC = "eval/accuracy"
PAGE_SIZE = 1000
SHOWN_NAMES = 15


class CompareError(OrchestratorError, ValueError):
    """The comparison cannot be made as asked (unknown experiment, sweep, run or metric; bad filter)."""

    exit_code = 2


@dataclass(frozen=True)
class CompareRequest:
    """What to compare and how to show it."""

    tracking_uri: str
    experiment: str
    sweep: Optional[str]
    runs: tuple[str, ...]
    filter: str
    metric: str
    mode: str
    plot: Optional[str]
    format: str


def parse_args(argv: Sequence[str]) -> CompareRequest:
    """Command-line options -> CompareRequest (argparse exits 2 on an unknown option or choice)."""
    parser = argparse.ArgumentParser(
        prog="orchestrator compare",
        description=(
            "Compare MLflow runs: one row per run with the params that differ between them and the metric's "
            "final and best value, best first."
        ),
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store or server (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in this directory, as `orchestrator train` uses)",
    )
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment name (default %(default)s)")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--sweep", help=f"a sweep id: the children of the run tagged {SWEEP_TAG}=ID")
    selection.add_argument("--runs", nargs="+", default=(), metavar="ID", help="these run ids")
    parser.add_argument("--filter", default="", help="MLflow filter, e.g. \"params.model.name = 'cnn'\"")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help="metric to rank and plot (default %(default)s)")
    parser.add_argument(
        "--mode",
        choices=MODES,
        help="higher (max) or lower (min) is better (default: min for losses and errors, else max)",
    )
    parser.add_argument("--plot", metavar="PNG", help="draw the metric's curves over steps into this PNG file")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output (default %(default)s)")
    args = parser.parse_args(list(argv))
    return CompareRequest(
        tracking_uri=args.tracking_uri or default_tracking_uri(),
        experiment=args.experiment,
        sweep=args.sweep,
        runs=tuple(args.runs),
        filter=args.filter.strip(),
        metric=args.metric,
        mode=args.mode or default_mode(args.metric),
        plot=args.plot,
        format=args.format,
    )


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the training default: sqlite:///mlflow.db in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def compare_main(argv: Sequence[str]) -> int:
    """Run the command; returns the exit code (2 for anything the user has to change)."""
    try:
        request = parse_args(argv)
        records = load_records(open_client(request.tracking_uri), request)
        rows = build_rows(records, request.mode)
        sys.stdout.write(render(rows, request.metric, request.mode, request.format))
        if request.plot:
            from orchestrator.cli.compare_plot import plot_curves

            drawn = plot_curves(records, rows, curve_labels(rows), request.metric, request.mode, request.plot)
            print(f"plot: {request.plot} ({drawn} curves of {request.metric})", file=sys.stderr)
    except SystemExit as exit_request:  # argparse: --help, or a bad option with its usage message
        return exit_request.code if isinstance(exit_request.code, int) else 2
    except OrchestratorError as error:
        print(f"orchestrator compare: {error}", file=sys.stderr)
        return error.exit_code
    return 0


def open_client(tracking_uri: str) -> Any:
    """A client for the store; a missing SQLite file or an unreachable server is an error, not a new store."""
    from mlflow import MlflowClient

    from orchestrator.tracking.store_guard import StoreGuard, sqlite_path
    from orchestrator.tracking.transport import check_server, is_server

    database = sqlite_path(tracking_uri)
    if database is not None and not database.exists():
        raise CompareError(f"no MLflow store at {database}: run a job here first, or pass --tracking-uri")
    if is_server(tracking_uri):
        check_server(tracking_uri, DEFAULT_EXPERIMENT, setting="--tracking-uri")
    return StoreGuard.for_uri(tracking_uri).call(lambda: MlflowClient(tracking_uri=tracking_uri))


def load_records(client: Any, request: CompareRequest) -> list[RunRecord]:
    """The selected runs with the metric's history; errors name what is unknown and what exists."""
    runs = select_runs(client, request)
    if not runs:
        raise CompareError(f"no runs match in experiment {request.experiment!r}{_filter_hint(client, request)}")
    if not any(request.metric in run.data.metrics for run in runs):
        known = sorted({key for run in runs for key in run.data.metrics})
        raise CompareError(
            f"--metric {request.metric!r}: none of the {len(runs)} selected runs has it; their metrics: {_names(known)}"
        )
    return [_record(client, run, request.metric if request.metric in run.data.metrics else None) for run in runs]


def select_runs(client: Any, request: CompareRequest) -> list[Any]:
    """The runs to compare: explicit ids, a sweep's children, or an experiment's runs, narrowed by the filter."""
    if request.runs:
        found = [_get_run(client, run_id, request.tracking_uri) for run_id in request.runs]
        ids = ", ".join(f"'{run.info.run_id}'" for run in found)
        experiments = sorted({run.info.experiment_id for run in found})
        return _search(client, experiments, [f"attributes.run_id IN ({ids})", request.filter])
    experiment_id = _experiment_id(client, request.experiment)
    if request.sweep:
        parent = _sweep_parent(client, experiment_id, request.sweep, request)
        return _search(client, [experiment_id], [f"tags.`{PARENT_TAG}` = '{parent}'", request.filter])
    # a sweep's parent run holds no training of its own: its children are the runs to compare
    return [run for run in _search(client, [experiment_id], [request.filter]) if SWEEP_TAG not in run.data.tags]


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is None:
        names = sorted((experiment.name for experiment in client.search_experiments()), key=str.lower)
        raise CompareError(f"--experiment {name!r} does not exist; experiments: {_names(names)}")
    return found.experiment_id


def _sweep_parent(client: Any, experiment_id: str, sweep: str, request: CompareRequest) -> str:
    """The parent run of sweep `sweep` (request.sweep, given) in the experiment."""
    parents = _search(client, [experiment_id], [f"tags.`{SWEEP_TAG}` = '{_quoted(sweep)}'"])
    if not parents:
        tagged = _search(client, [experiment_id], [f"tags.`{SWEEP_TAG}` LIKE '%'"])
        sweeps = sorted({run.data.tags[SWEEP_TAG] for run in tagged})
        raise CompareError(
            f"--sweep {request.sweep!r} is not in experiment {request.experiment!r}; sweeps there: {_names(sweeps)}"
        )
    return parents[0].info.run_id


def _get_run(client: Any, run_id: str, tracking_uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException:
        raise CompareError(f"--runs: no run with id {run_id!r} in {tracking_uri}") from None


def _search(client: Any, experiment_ids: Sequence[str], clauses: Sequence[str]) -> list[Any]:
    from mlflow.exceptions import MlflowException

    text = " AND ".join(clause for clause in clauses if clause)
    runs, token = [], None
    try:
        while True:
            page = client.search_runs(list(experiment_ids), text, max_results=PAGE_SIZE, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs
    except MlflowException as error:
        raise CompareError(
            f"--filter {text!r} is not valid: {error.message}; for example "
            f"--filter \"params.model.name = 'cnn' AND metrics.`eval/accuracy` > 0.9\""
        ) from None


def _filter_hint(client: Any, request: CompareRequest) -> str:
    if not request.filter:
        return ""
    unfiltered = select_runs(client, CompareRequest(**{**request.__dict__, "filter": ""}))
    params = sorted({key for run in unfiltered for key in run.data.params})
    return f" with --filter {request.filter!r} ({len(unfiltered)} runs without it; their params: {_names(params)})"


def _record(client: Any, run: Any, metric: Optional[str]) -> RunRecord:
    history = client.get_metric_history(run.info.run_id, metric) if metric else []
    points = tuple((m.step, m.value) for m in sorted(history, key=lambda m: (m.step, m.timestamp)))
    return RunRecord(
        run_id=run.info.run_id,
        name=run.info.run_name or run.info.run_id[:8],
        status=run.info.status,
        start_ms=run.info.start_time,
        end_ms=run.info.end_time,
        params=dict(run.data.params),
        history=points,
    )


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES]) or "none"
    return shown + (f" (and {len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else "")


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")
