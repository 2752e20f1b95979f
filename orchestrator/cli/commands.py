"""Entry points: `orchestrator train` (the Hydra main) and the other subcommands."""

from __future__ import annotations

import gc
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Sequence

if TYPE_CHECKING:  # only types here: the commands import what they need when they run
    from omegaconf import DictConfig

    from orchestrator.cli.job_summary import JobSummary
    from orchestrator.config.schema import JobConfig
    from orchestrator.train.components import ComponentCheck

USAGE = """usage: orchestrator <command> [args]   (orchestrator --version: the installed version)

commands:
  train [overrides]          run a training job (Hydra: --help, --cfg job, -m for sweeps)
  plan [--json] [overrides]  connect, plan and print bundles, nodes and each rank's environment;
                             start nothing (exit 0 only if the job can be placed now)
  submit --address URL [--no-wait] [--working-dir DIR] [overrides]
                             run `orchestrator train` on a remote cluster (Ray Job Submission)
  k8s [overrides] [--image IMAGE] [--namespace NS] [--name NAME]
                             print a KubeRay RayJob that runs `train` with these overrides on Kubernetes
  compare [options]          compare runs: differing params, final/best metric, curves (compare --help)
  mlflow-server              run a local MLflow tracking server until Ctrl-C (mlflow-server --help)
  pool up|status|down        a warm pool of rank processes on a running cluster, for cluster.pool (pool --help)
  promote NAME --alias A [--metric M] [--version V]
                             point an alias of a registered model at the best (or given) version
  export MODEL --format onnx|pt2 --out DIR [--serve-check]
                             export a run's or a registered model, checked against the eager model
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch `orchestrator <command> ...`; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # a command is missing: the usage, as an error
        print(USAGE, end="", file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if args[0] in ("-V", "--version"):
        from orchestrator import __version__

        print(f"orchestrator {__version__}")
        return 0
    command, rest = args[0], args[1:]
    handler = COMMANDS.get(command)
    if handler is None:
        print(f"orchestrator: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return handler(rest)


def run() -> None:
    """The `orchestrator` command (and `python -m orchestrator`): main(), then exit with its code.

    The job has closed what it owns by then (Ray, the run record, threads), so the interpreter's last
    garbage collection, a walk over every object torch, Ray and MLflow made (2-3 s of one core here),
    only frees memory the process is about to give back: frozen objects are left out of it.
    """
    # as under `python -m`: the user's own modules (model._target_=mypkg.nets.Net) import from the
    # working directory, which a console script does not put on sys.path
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    code = main()
    gc.freeze()
    sys.exit(code)


def train_command(overrides: Sequence[str]) -> int:
    """`orchestrator train [overrides]`: Hydra composes the config and calls a TrainTask.

    With -m the sweep's session (opened by hydra/launcher=ray) is closed here, whatever ended the
    sweep: its parent run gets its status and the summary table is printed.
    """
    import hydra

    from orchestrator.config.store import register_configs

    register_configs()
    from orchestrator.config.compose import conf_dir, with_target_options
    from orchestrator.config.hydra_output import OUTPUT_SUBDIR_KEY, sets_output_subdir

    if sets_output_subdir(overrides):
        print(
            f"orchestrator: {OUTPUT_SUBDIR_KEY} is not valid to set: the orchestrator writes the output "
            f"directory's .hydra/ itself, with secrets masked; remove the override",
            file=sys.stderr,
        )
        return 2
    from orchestrator.config.compose import check_train_args
    from orchestrator.errors import OrchestratorError

    try:
        check_train_args(with_target_options(overrides), Path.cwd())
    except OrchestratorError as error:  # before Hydra starts: no output folder, Hydra's own wording never shown
        print(f"orchestrator: {error}", file=sys.stderr)
        return error.exit_code
    task = TrainTask()
    hydra_main = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(task)
    saved_argv = sys.argv
    sys.argv = ["orchestrator-train", *with_target_options(overrides)]
    code = 0
    try:
        with _sigterm_as_interrupt():
            hydra_main()
    except SystemExit as exit_request:
        code = _exit_code(exit_request)
    except KeyboardInterrupt:  # a sweep's (a single job turns Ctrl-C into SystemExit(130) itself)
        print("orchestrator: interrupted; the running trials are recorded as KILLED", file=sys.stderr)
        code = 130
    finally:
        sys.argv = saved_argv
        if task.sweep is not None:
            code = task.sweep.close(code)
    return code


class TrainTask:
    """What Hydra calls: one job per call; under -m with hydra/launcher=ray it also keeps the sweep's session.

    The launcher runs the trials itself and opens the session on its first batch (`sweep_session`);
    the command closes it when Hydra is done. The launcher finds it through
    orchestrator.sweep.session_holder.SweepSessionHolder, which this class satisfies.
    """

    def __init__(self) -> None:
        self.sweep: Optional[Any] = None

    def sweep_session(self, open_session: Callable[[], object]) -> Any:
        """The sweep's session, opened by `open_session` on the first call."""
        if self.sweep is None:
            self.sweep = open_session()
        return self.sweep

    def __call__(self, cfg: DictConfig) -> Optional[float]:
        """Run one job (`orchestrator train`, or a trial under hydra/launcher=basic); returns sweep.objective."""
        return _train_task(cfg)


def _exit_code(exit_request: SystemExit) -> int:
    code = exit_request.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


class _sigterm_as_interrupt:
    """SIGTERM stops a job the way Ctrl-C does (ranks stop, the run is marked KILLED)."""

    def __enter__(self) -> _sigterm_as_interrupt:
        self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> Literal[False]:
        signal.signal(signal.SIGTERM, self.previous)
        return False


def _train_task(cfg: DictConfig) -> Optional[float]:
    from hydra.core.hydra_config import HydraConfig

    from orchestrator.cli.console import Console
    from orchestrator.config.export import redactor_for
    from orchestrator.config.hydra_output import remove_empty_dirs, write_hydra_files
    from orchestrator.errors import OrchestratorError

    hydra = HydraConfig.get()
    try:
        try:
            job = _load(cfg)
            components = _check_components(job)
        except OrchestratorError:
            remove_empty_dirs(hydra.runtime.output_dir, Path.cwd())  # Hydra made it; a rejected config keeps none
            raise
        overrides = list(hydra.overrides.task)
        hydra_dir = write_hydra_files(
            hydra.runtime.output_dir, cfg, HydraConfig.instance().cfg, overrides, redactor_for(job, overrides)
        )
        from launchers.jobs.job_runner import run_job

        console = Console()
        summary = run_job(job, console, overrides, hydra_dir=str(hydra_dir), components=components)
    except OrchestratorError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    except KeyboardInterrupt:
        print("orchestrator: interrupted; the run is recorded as KILLED", file=sys.stderr)
        raise SystemExit(130) from None
    print_summary(job, summary)
    if summary.outcome.status != "FINISHED":
        raise SystemExit(130 if summary.outcome.status == "KILLED" else 1)
    result = summary.outcome.result
    assert result is not None  # a FINISHED job ends with rank 0's result
    return result.metrics.get(job.sweep.objective)


def _load(cfg: DictConfig) -> JobConfig:
    from orchestrator.config.load import load_config

    return load_config(cfg, Path.cwd())


def _check_components(job: JobConfig) -> Optional[ComponentCheck]:
    """Your own model and data are built once here, before any cluster resource (None for built-in ones)."""
    from orchestrator.config.schema import TargetModelConfig

    if not isinstance(job.model, TargetModelConfig):
        return None  # the built-in components need no torch on the driver before the job starts
    from orchestrator.train.components import check_components

    check = check_components(job)
    if check is not None:
        evaluation = "no eval set" if check.eval_samples is None else f"{check.eval_samples:,} eval samples"
        print(
            f"model: {job.model.target}, {check.num_parameters:,} parameters; data: {job.data.target}, "
            f"{check.train_samples:,} train samples, {evaluation}"
        )
    return check


def print_summary(job: JobConfig, summary: JobSummary) -> None:
    """The end of a train command: accuracy, the run id, and how to open the run in the MLflow UI."""
    from orchestrator.cli.job_summary import summary_lines

    for line, to_stderr in summary_lines(job, summary):
        print(line, file=sys.stderr if to_stderr else sys.stdout)


def compare_command(args: Sequence[str]) -> int:
    """`orchestrator compare ...`: a table (or CSV/JSON, and a plot) of runs side by side."""
    from orchestrator.cli.compare import compare_main

    return compare_main(args)


def promote_command(args: Sequence[str]) -> int:
    """`orchestrator promote NAME --alias A ...`: move a registered model's alias to the best or given version."""
    from orchestrator.cli.registry_commands import promote_main

    return promote_main(args)


def export_command(args: Sequence[str]) -> int:
    """`orchestrator export MODEL --format onnx|pt2 --out DIR ...`: export and check a logged model."""
    from orchestrator.cli.registry_commands import export_main

    return export_main(args)


def pool_command(args: Sequence[str]) -> int:
    """`orchestrator pool up|status|down ...`: a warm pool of rank processes on a running cluster."""
    from orchestrator.cli.pool_commands import pool_main

    return pool_main(args)


def mlflow_server_command(args: Sequence[str]) -> int:
    """`orchestrator mlflow-server ...`: a local MLflow tracking server in the foreground, until Ctrl-C."""
    from orchestrator.tracking.mlflow_server import mlflow_server_main

    with _sigterm_as_interrupt():
        return mlflow_server_main(args)


def plan_command(args: Sequence[str]) -> int:
    """`orchestrator plan [--json] [overrides]`: connect, plan and print; start no worker.

    Exit code 0 when the job can be placed now, 1 when it cannot, 2 for an invalid config.
    """
    import json

    from launchers.cluster.connection import connect
    from orchestrator.config.compose import compose_job
    from orchestrator.errors import OrchestratorError
    from orchestrator.planning.planned_job import plan_on_cluster
    from orchestrator.planning.preflight import predicted_specs, preflight_dict, render_preflight

    as_json = "--json" in args
    try:
        job = compose_job([arg for arg in args if arg != "--json"], Path.cwd())
        with connect(job.cluster) as cluster:
            planned = plan_on_cluster(job, cluster)  # the same planning as train's
    except OrchestratorError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        return error.exit_code
    plan, prediction = planned.plan, planned.prediction
    specs = predicted_specs(plan, cluster, prediction)
    if as_json:
        print(json.dumps(preflight_dict(plan, cluster, prediction, specs), indent=2))
    else:
        print(render_preflight(plan, cluster, prediction, specs))
    return 0 if prediction.placeable else 1


def submit_command(args: Sequence[str]) -> int:
    """`orchestrator submit --address http://HEAD:8265 [--no-wait] [--working-dir DIR] [overrides]`."""
    import argparse

    from launchers.submission.job_submission import build_submission, local_store_warning, stdout_writer, submit
    from orchestrator.config.compose import compose_job
    from orchestrator.config.export import redactor_for
    from orchestrator.errors import OrchestratorError

    parser = argparse.ArgumentParser(
        prog="orchestrator submit",
        description="Run `orchestrator train` on a remote Ray cluster through Ray Job Submission, streaming its logs.",
    )
    parser.add_argument("--address", required=True, help="the cluster's dashboard, e.g. http://HEAD:8265")
    parser.add_argument("--no-wait", action="store_true", help="print the submission id and return")
    parser.add_argument("--working-dir", default=".", help="uploaded as the job's working_dir (default: .)")
    options, overrides = parser.parse_known_args(args)
    try:
        job = compose_job(overrides, Path.cwd())  # the same validation as train, before anything is sent
    except OrchestratorError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        return error.exit_code
    # Ray's refusals can quote the runtime env sent (secrets included): every message goes through the redactor
    redactor = redactor_for(job, overrides)
    try:
        warning = local_store_warning(job)
        if warning:
            print(warning, file=sys.stderr)
        submission = build_submission(job, overrides, Path(options.working_dir).resolve())
        return submit(options.address, submission, wait=not options.no_wait, write=stdout_writer)
    except OrchestratorError as error:
        print(f"orchestrator: {redactor.text(str(error))}", file=sys.stderr)
        return error.exit_code


# --- orchestrator k8s ------------------------------------------------------------------------------


def k8s_command(args: Sequence[str]) -> int:
    """`orchestrator k8s [overrides] [--image] [--namespace] [--name]`: print the job's RayJob as YAML."""
    import argparse
    import secrets
    from datetime import datetime, timezone

    from orchestrator.config.compose import compose_job
    from orchestrator.config.export import redactor_for
    from orchestrator.errors import OrchestratorError
    from orchestrator.kubernetes import rayjob as manifests

    parser = argparse.ArgumentParser(
        prog="orchestrator k8s",
        description="Print a KubeRay RayJob that runs "
        "`orchestrator train OVERRIDES` on Kubernetes; pipe it to `kubectl apply -f -`.",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, exactly as for `orchestrator train`")
    parser.add_argument("--image", default=manifests.DEFAULT_IMAGE, help="image of the head and worker pods")
    parser.add_argument("--namespace", default=manifests.DEFAULT_NAMESPACE, help="namespace of k8s/base's MLflow")
    parser.add_argument(
        "--name", help="RayJob name (default: orchestrator-<UTC time>-<4 hex digits>, new for every run)"
    )
    parser.add_argument(
        "--secret",
        default=manifests.DEFAULT_SECRET,
        help="Kubernetes Secret the pods read the job's secret environment variables from (default: %(default)s)",
    )
    try:
        options = parser.parse_intermixed_args(list(args))
    except SystemExit as exit_request:  # --help, or a usage error (argparse exits 2)
        return _exit_code(exit_request)
    name = options.name or manifests.default_name(
        datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S"), secrets.token_hex(2)
    )
    target = manifests.RayJobTarget(image=options.image, namespace=options.namespace, name=name, secret=options.secret)
    try:
        job = compose_job(options.overrides, Path.cwd())
        document = manifests.render_rayjob(job, options.overrides, target)
    except OrchestratorError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        return error.exit_code
    print(manifests.to_yaml(document), end="")
    secret_names = manifests.secret_env_names(job, redactor_for(job, options.overrides, environ={}))
    if secret_names:
        literals = " ".join(f'--from-literal={variable}="${variable}"' for variable in secret_names)
        print(
            f"orchestrator: the pods read {', '.join(secret_names)} from the Secret {target.secret}, which this "
            f"manifest does not contain; create it first (values from your environment, not the manifest):\n"
            f"  kubectl -n {target.namespace} create secret generic {target.secret} {literals}",
            file=sys.stderr,
        )
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "train": train_command,
    "plan": plan_command,
    "submit": submit_command,
    "k8s": k8s_command,
    "compare": compare_command,
    "mlflow-server": mlflow_server_command,
    "pool": pool_command,
    "promote": promote_command,
    "export": export_command,
}
