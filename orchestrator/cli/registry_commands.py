"""`orchestrator promote` and `orchestrator export`: from a registered model to an alias, an ONNX or pt2 file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from orchestrator.cli.compare import default_tracking_uri, open_client
from orchestrator.cli.compare_table import MODES, default_mode
from orchestrator.errors import OrchestratorError

DEFAULT_METRIC = "eval/accuracy"


def promote_main(argv: Sequence[str]) -> int:
    """`orchestrator promote NAME --alias A [--metric M] [--version V]`; returns the exit code."""
    from orchestrator.registry.errors import RegistryError
    from orchestrator.registry.names import alias_problem
    from orchestrator.registry.promotion import choose_version
    from orchestrator.registry.store import alias_version, move_alias, version_metrics

    parser = argparse.ArgumentParser(
        prog="orchestrator promote",
        description="Point an alias of a registered model at a version: the one given, or the best by a metric.",
    )
    parser.add_argument("name", help="the registered model (tracking.register_as)")
    parser.add_argument("--alias", required=True, help="the alias to move, e.g. champion")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help="choose the best version by it (default %(default)s)")
    parser.add_argument(
        "--mode", choices=MODES, help="higher (max) or lower (min) is better (default: min for losses and errors)"
    )
    parser.add_argument("--version", type=int, help="this version instead of the best")
    _tracking_uri_option(parser)
    try:
        args = parser.parse_args(list(argv))
        problem = alias_problem(args.alias)
        if problem:
            raise RegistryError(f"--alias {args.alias}: {problem}")
        client = open_client(args.tracking_uri or default_tracking_uri())
        versions = version_metrics(client, args.name)
        decision = choose_version(
            args.name,
            args.alias,
            versions,
            args.metric,
            args.mode or default_mode(args.metric),
            previous_version=alias_version(client, args.name, args.alias),
            requested=args.version,
        )
        if decision.changes:
            move_alias(client, args.name, args.alias, decision.chosen.version)
    except SystemExit as exit_request:  # argparse: --help, or a usage error
        return exit_request.code if isinstance(exit_request.code, int) else 2
    except OrchestratorError as error:
        print(f"orchestrator promote: {error}", file=sys.stderr)
        return error.exit_code
    print(decision.describe())
    return 0


def export_main(argv: Sequence[str]) -> int:
    """`orchestrator export MODEL --format onnx|pt2 --out DIR [--serve-check]`; returns the exit code."""
    from orchestrator.export.pipeline import FORMATS, ExportRequest, run_export
    from orchestrator.registry.model_ref import USAGE, parse_model_ref

    parser = argparse.ArgumentParser(
        prog="orchestrator export",
        description="Export a logged model to ONNX or pt2 (dynamic batch axis), check that it computes what the "
        "eager model computes, and log the file to the model's run.",
    )
    parser.add_argument("model", help=USAGE)
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="default %(default)s")
    parser.add_argument("--out", required=True, help="folder for the file (an existing file is never overwritten)")
    parser.add_argument(
        "--serve-check",
        action="store_true",
        help="also serve the model with `mlflow models serve` on 127.0.0.1 and compare its HTTP answers",
    )
    _tracking_uri_option(parser)
    try:
        args = parser.parse_args(list(argv))
        ref = parse_model_ref(args.model)
        tracking_uri = args.tracking_uri or default_tracking_uri()
        client = open_client(tracking_uri)
        request = ExportRequest(
            ref=ref, format=args.format, out_dir=Path(args.out), tracking_uri=tracking_uri, serve_check=args.serve_check
        )
        report = run_export(client, request, _say)
    except SystemExit as exit_request:
        return exit_request.code if isinstance(exit_request.code, int) else 2
    except OrchestratorError as error:
        print(f"orchestrator export: {error}", file=sys.stderr)
        return error.exit_code
    print(f"export: {report.path} passed its checks")
    return 0


def _tracking_uri_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store or server (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this directory)",
    )


def _say(line: str) -> None:
    print(line, flush=True)
