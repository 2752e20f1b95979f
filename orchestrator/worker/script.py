"""entrypoint=script: run an unmodified torchrun-style script as this rank, streaming its output.

The script gets torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, TORCHELASTIC_RESTART_COUNT, ...)
and initialises the process group itself. It runs as a child process that the kernel kills if the
worker dies (PR_SET_PDEATHSIG), so a lost worker never leaves an orphaned rank behind.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import IO, Callable, Iterable, Mapping, Optional, TextIO, Union

from orchestrator import api
from orchestrator.config.schema import JobConfig
from orchestrator.errors import ConfigError
from orchestrator.lifecycle.rank_reports import CheckpointReport, ErrorReport, LogReport, MetricsReport, ResultReport
from orchestrator.planning.rank_specs import WorkerSpec
from orchestrator.worker.network import SOCKET_IFNAME_VARIABLES, interface_holding
from orchestrator.worker.script_host import ScriptHost
from orchestrator.worker.stop import StopSignal

STDERR_TAIL_LINES = 40
BREAKPOINT_VARIABLE = "PYTHONBREAKPOINT"
"""Ray points it at its own remote debugger in every worker; a script's breakpoint() must not wait for `ray debug`."""
NCCL_ERROR_HANDLING_VARIABLE = "TORCH_NCCL_ASYNC_ERROR_HANDLING"
"""torchrun sets it to 1 (a failed or timed-out collective aborts the process) unless it is set already."""

# Runs in the child before the script: ask the kernel for SIGKILL when the parent worker dies, then
# become `python script args` (the death signal survives exec).
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"  # 1 = PR_SET_PDEATHSIG
    "os.getppid() == 1 and sys.exit('orchestrator: the worker died before the script started')\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


def script_environment(spec: WorkerSpec, job: JobConfig, environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The worker's environment (`environ`, default os.environ) as torchrun would hand it to the rank.

    Plus the rank's torchrun variables, socket interface pins and TORCH_NCCL_ASYNC_ERROR_HANDLING=1;
    minus Ray's PYTHONBREAKPOINT (the value from cluster.runtime_env.env_vars if the user set one).
    """
    env = dict(os.environ if environ is None else environ)
    env.pop(BREAKPOINT_VARIABLE, None)
    users_own = (job.cluster.runtime_env.get("env_vars") or {}).get(BREAKPOINT_VARIABLE)
    if users_own is not None:
        env[BREAKPOINT_VARIABLE] = str(users_own)
    env.update(spec.env)
    env.setdefault(NCCL_ERROR_HANDLING_VARIABLE, "1")
    interface = interface_holding(spec.node_ip)
    if interface is not None:
        for variable in SOCKET_IFNAME_VARIABLES:
            env.setdefault(variable, interface)
    return env


@dataclass(frozen=True)
class ScriptAttempt:
    """What the orchestrator API in the script needs from this attempt (see orchestrator.api)."""

    checkpoint_dir: str
    """The run's checkpoint folder: orchestrator.save_checkpoint writes there."""
    resume_from: Optional[str] = None
    """The checkpoint orchestrator.load_checkpoint returns (after a restart, or with trainer.resume)."""
    run_id: Optional[str] = None
    """The MLflow run the script's reports are recorded in."""

    def environment(self, job: JobConfig, report_fd: int) -> dict[str, str]:
        """The variables orchestrator.api reads in the script."""
        env = {
            api.REPORT_FD_VARIABLE: str(report_fd),
            api.CHECKPOINT_DIR_VARIABLE: self.checkpoint_dir,
            api.KEEP_LAST_VARIABLE: str(job.checkpoint.keep_last),
            api.RESUME_FROM_VARIABLE: self.resume_from or "",
        }
        if self.run_id:
            env[api.RUN_ID_VARIABLE] = self.run_id
        return env


def run_script(
    spec: WorkerSpec,
    job: JobConfig,
    emit: Callable[[object], None],
    stop: StopSignal,
    attempt: ScriptAttempt,
    host: Optional[ScriptHost] = None,
) -> Union[ResultReport, ErrorReport]:
    """Run job.script on this rank to its end; ResultReport on exit 0, else ErrorReport.

    Besides its stdout and stderr, the script's reports (orchestrator.report, save_checkpoint) arrive
    on a pipe of their own and become MetricsReports and CheckpointReports. With a started `host` that can
    take the rank's environment, the script runs there (torch already imported); otherwise, and the host is
    then ended, in a new process.
    """
    script_path = job.script.path
    if script_path is None:  # validation requires it; a JobConfig built by hand may still lack it
        raise ConfigError(["entrypoint=script needs the script to run: set script.path=train.py"])
    environment = script_environment(spec, job)
    warm = {**environment, **attempt.environment(job, host.report_fd)} if host is not None else None
    if host is not None and warm is not None and host.takes(warm):
        process, report_read = host.run(script_path, job.script.arguments(), warm), host.report_read
    else:
        if host is not None:  # it started with other values of variables read at start: it cannot be this rank
            host.close()
        process, report_read = _start_cold(script_path, job, environment, attempt)
    stop.on_stop(process.terminate)  # SIGTERM: the script's own handlers (and torch's) run
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    progress = Progress()
    shown = job.script.console_ranks is None or spec.world_rank in job.script.console_ranks
    files = rank_log_dir(job, spec)
    readers = [
        threading.Thread(
            target=_pump,
            args=(process.stdout, "stdout", spec.world_rank, emit if shown else None, None, files),
            name=f"orchestrator-rank{spec.world_rank}-stdout",
            daemon=True,
        ),
        threading.Thread(
            target=_pump,
            args=(process.stderr, "stderr", spec.world_rank, emit if shown else None, tail, files),
            name=f"orchestrator-rank{spec.world_rank}-stderr",
            daemon=True,
        ),
        threading.Thread(
            target=_pump_reports,
            args=(report_read, spec.world_rank, emit, progress),
            name=f"orchestrator-rank{spec.world_rank}-reports",
            daemon=True,
        ),
    ]
    for reader in readers:
        reader.start()
    code = process.wait()
    for reader in readers:
        reader.join()
    if code == 0 or stop.is_set():
        return ResultReport(
            world_rank=spec.world_rank, step=progress.step, stopped=stop.is_set(), metrics=dict(progress.metrics)
        )
    return ErrorReport(
        world_rank=spec.world_rank,
        node_ip=spec.node_ip,
        error_type="ScriptFailed",
        message=f"{os.path.basename(script_path)} {exit_text(code)}{known_cause(code, tail)}",
        traceback="".join(tail),
        exit_code=code,
    )


def _start_cold(
    script_path: str, job: JobConfig, environment: dict[str, str], attempt: ScriptAttempt
) -> tuple[subprocess.Popen[bytes], int]:
    """`python -u script args` as a new process: the process and the read end of its report pipe."""
    command = [sys.executable, "-c", _LAUNCHER, "-u", script_path, *job.script.arguments()]
    report_read, report_write = os.pipe()
    try:
        process = subprocess.Popen(
            command,
            env={**environment, **attempt.environment(job, report_write)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(report_write,),
        )
    except BaseException:
        os.close(report_read)
        raise
    finally:
        os.close(report_write)  # the script holds the only write end: the reader sees its end
    return process, report_read


def exit_text(code: int) -> str:
    """How a process ended, in words: `exited with code 2`, `was killed by SIGKILL (signal 9)`."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "a signal"
    return f"was killed by {name} (signal {-code})"


TEARDOWN_ABORT = "terminate called without an active exception"
"""What libstdc++ prints when a torch thread that wants the GIL during the interpreter's teardown is ended."""


def known_cause(code: int, stderr_tail: Iterable[str]) -> str:
    """A hint to append to how a script ended, where its end has a known cause we can name ("" otherwise).

    An abort with TEARDOWN_ABORT in stderr is, in practice, torch's threads meeting the interpreter's exit
    (pytorch/pytorch#190489): the script's own code had usually finished, and the fix is in how it ends.
    """
    if code == -signal.SIGABRT and any(TEARDOWN_ABORT in line for line in stderr_tail):
        return (
            f" with '{TEARDOWN_ABORT}': torch's threads most likely met the"
            " interpreter's exit (pytorch/pytorch#190489; docs/your-code.md, 'A rank that aborts as it exits',"
            " says how a script ends without it)"
        )
    return ""


def split_line(line: str) -> tuple[str, bool]:
    """A line as read with its ending kept -> (its text, whether it ended with a lone carriage return)."""
    if line.endswith("\r"):
        return line[:-1], True
    return line.rstrip("\r\n"), False


@dataclass
class Progress:
    """The highest step the script reported or checkpointed (its step count at the end), and the latest
    value of every metric it reported (its result's metrics)."""

    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


def read_report(line: str) -> Union[MetricsReport, CheckpointReport]:
    """One line from orchestrator.api's pipe -> a MetricsReport or a CheckpointReport."""
    message = json.loads(line)
    if "checkpoint" in message:
        return CheckpointReport(step=int(message["step"]), path=str(message["checkpoint"]))
    return MetricsReport(step=int(message["step"]), metrics={str(k): float(v) for k, v in message["metrics"].items()})


def _pump_reports(descriptor: int, world_rank: int, emit: Callable[[object], None], progress: Progress) -> None:
    with open(descriptor, encoding="utf-8", errors="replace") as stream:
        for line in stream:
            try:
                report = read_report(line)
            except (ValueError, KeyError, TypeError, AttributeError) as error:  # not our API's line: say so, go on
                emit(
                    LogReport(
                        world_rank=world_rank,
                        stream="stderr",
                        line=f"orchestrator: unreadable report ignored ({type(error).__name__}: {error})",
                    )
                )
                continue
            progress.step = max(progress.step, report.step)
            if isinstance(report, MetricsReport):
                progress.metrics.update(report.metrics)
            emit(report)


def rank_log_dir(job: JobConfig, spec: WorkerSpec) -> Optional[str]:
    """Where this rank's output files go with script.log_dir: <log_dir>/<Ray name>/attempt_<N>/rank_<R>.

    The Ray name is new for every command (its run records it as the tag orchestrator.ray_name), so a
    resumed run, whose attempts count from 0 again, never meets an earlier command's files.
    """
    if job.script.log_dir is None:
        return None
    run = spec.env.get("TORCHELASTIC_RUN_ID", "job")
    number = spec.env.get("TORCHELASTIC_RESTART_COUNT", "0")
    return os.path.join(job.script.log_dir, run, f"attempt_{number}", f"rank_{spec.world_rank}")


def _pump(
    pipe: IO[bytes],
    name: str,
    world_rank: int,
    emit: Optional[Callable[[object], None]],
    tail: Optional[collections.deque[str]],
    files: Optional[str] = None,
) -> None:
    # newline="": lines end at \n, \r\n or a lone \r (a progress bar redrawing itself), kept as they came
    stream = io.TextIOWrapper(pipe, errors="replace", newline="")  # the locale's encoding, as the script's
    with contextlib.ExitStack() as stack:
        copy: Optional[TextIO] = None
        if files is not None:
            path = os.path.join(files, f"{name}.log")
            try:
                os.makedirs(files, exist_ok=True)
                # "x": a file of an earlier attempt is never written over
                copy = stack.enter_context(open(path, "x", encoding="utf-8", newline=""))
            except OSError as error:  # the output still reaches the driver; the pipe must be drained either way
                if emit is not None:
                    emit(
                        LogReport(
                            world_rank=world_rank,
                            stream="stderr",
                            line=f"orchestrator: {path} not written: {type(error).__name__}: {error}",
                        )
                    )
        _read_lines(stream, name, world_rank, emit, tail, copy)
    stream.close()


def _read_lines(
    stream: Iterable[str],
    name: str,
    world_rank: int,
    emit: Optional[Callable[[object], None]],
    tail: Optional[collections.deque[str]],
    copy: Optional[TextIO],
) -> None:
    redrawing = False
    for line in stream:
        if copy is not None:
            copy.write(line)
            copy.flush()
        text, redrawn = split_line(line)
        if redrawn and not text:
            continue  # the \r that starts a progress bar's drawing: nothing was drawn yet
        if emit is not None:
            emit(LogReport(world_rank=world_rank, stream=name, line=text, redrawn=redrawn))
        if tail is not None:
            if redrawing:
                tail.pop()  # the error's tail keeps a progress bar's last drawing only
            tail.append(text + "\n")
        redrawing = redrawn
