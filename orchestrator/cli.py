"""Entry points: `orchestrator train` (the Hydra main) and the other subcommands."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

USAGE = """usage: orchestrator <command> [args]

commands:
  train [overrides]   run a training job (Hydra: --help, --cfg job, -m for sweeps)
  compare [options]   compare runs: differing params, final/best metric, curves (compare --help)
  mlflow-server       run a local MLflow tracking server until Ctrl-C (mlflow-server --help)
"""


def conf_dir() -> Path:
    """The YAML config groups: shipped inside the package, or `conf/` beside it in a source checkout."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / "conf", package_dir.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"no conf/config.yaml near {package_dir}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Dispatch `orchestrator <command> ...`; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = args[0], args[1:]
    handler = COMMANDS.get(command)
    if handler is None:
        print(f"orchestrator: unknown command {command!r}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return handler(rest)


def train_command(overrides: Sequence[str]) -> int:
    """`orchestrator train [overrides]`: Hydra composes the config and calls `_train_task`."""
    import hydra

    from orchestrator.config.store import register_configs

    register_configs()
    hydra_main = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")(_train_task)
    saved_argv = sys.argv
    sys.argv = ["orchestrator-train", *overrides]
    try:
        with _sigterm_as_interrupt():
            hydra_main()
    except SystemExit as exit_request:
        return _exit_code(exit_request)
    finally:
        sys.argv = saved_argv
    return 0


def _exit_code(exit_request: SystemExit) -> int:
    code = exit_request.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


class _sigterm_as_interrupt:
    """SIGTERM stops a job the way Ctrl-C does (ranks stop, the run is marked KILLED)."""

    def __enter__(self):
        self.previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt

    def __exit__(self, *exc):
        signal.signal(signal.SIGTERM, self.previous)
        return False


def _train_task(cfg) -> Optional[float]:
    from hydra.core.hydra_config import HydraConfig

    from orchestrator.console import Console
    from orchestrator.errors import OrchestratorError

    try:
        job = _load(cfg)
        from launchers.job_runner import run_job

        console = Console()
        hydra = HydraConfig.get()
        summary = run_job(job, console, hydra.overrides.task, output_dir=hydra.runtime.output_dir)
    except OrchestratorError as error:
        print(f"orchestrator: {error}", file=sys.stderr)
        raise SystemExit(error.exit_code) from None
    except KeyboardInterrupt:
        print("orchestrator: interrupted; the run is recorded as KILLED", file=sys.stderr)
        raise SystemExit(130) from None
    print_summary(job, summary)
    if summary.outcome.status != "FINISHED":
        raise SystemExit(130 if summary.outcome.status == "KILLED" else 1)
    return summary.outcome.result.metrics.get("eval/accuracy")


def _load(cfg):
    from orchestrator.config.load import load_config

    return load_config(cfg, Path.cwd())


def print_summary(job, summary) -> None:
    """The end of a train command: accuracy, the run id, and how to open the run in the MLflow UI."""
    from orchestrator.summary import summary_lines

    for line, to_stderr in summary_lines(job, summary):
        print(line, file=sys.stderr if to_stderr else sys.stdout)


def compare_command(args: Sequence[str]) -> int:
    """`orchestrator compare ...`: a table (or CSV/JSON, and a plot) of runs side by side."""
    from orchestrator.compare import compare_main

    return compare_main(args)


def mlflow_server_command(args: Sequence[str]) -> int:
    """`orchestrator mlflow-server ...`: a local MLflow tracking server in the foreground, until Ctrl-C."""
    from launchers.mlflow_server import mlflow_server_main

    with _sigterm_as_interrupt():
        return mlflow_server_main(args)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "train": train_command,
    "compare": compare_command,
    "mlflow-server": mlflow_server_command,
}
