"""entrypoint=script: run an unmodified torchrun-style script as this rank, streaming its output.

The script gets torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...) and initialises the
process group itself. It runs as a child process that the kernel kills if the worker dies
(PR_SET_PDEATHSIG), so a lost worker never leaves an orphaned rank behind.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import threading
from typing import Callable, TextIO

from orchestrator.config.schema import JobConfig
from orchestrator.reports import ErrorReport, LogReport, ResultReport
from orchestrator.rendezvous import WorkerSpec
from orchestrator.worker.network import SOCKET_IFNAME_VARIABLES, interface_holding
from orchestrator.worker.stop import StopSignal

STDERR_TAIL_LINES = 40

# Runs in the child before the script: ask the kernel for SIGKILL when the parent worker dies, then
# become `python script args` (the death signal survives exec).
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"  # 1 = PR_SET_PDEATHSIG
    "os.getppid() == 1 and sys.exit('orchestrator: the worker died before the script started')\n"
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])\n"
)


def script_environment(spec: WorkerSpec) -> dict[str, str]:
    """The worker's environment plus the rank's torchrun variables and socket interface pins."""
    env = {**os.environ, **spec.env}
    interface = interface_holding(spec.node_ip)
    if interface is not None:
        for variable in SOCKET_IFNAME_VARIABLES:
            env.setdefault(variable, interface)
    return env


def run_script(spec: WorkerSpec, job: JobConfig, emit: Callable[[object], None], stop: StopSignal):
    """Run job.script on this rank to its end; ResultReport on exit 0, else ErrorReport."""
    command = [sys.executable, "-c", _LAUNCHER, "-u", job.script.path, *job.script.args]
    process = subprocess.Popen(command, env=script_environment(spec), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, bufsize=1)
    stop.on_stop(process.terminate)  # SIGTERM: the script's own handlers (and torch's) run
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    readers = [
        threading.Thread(target=_pump, args=(process.stdout, "stdout", spec.world_rank, emit, None),
                         name=f"orchestrator-rank{spec.world_rank}-stdout", daemon=True),
        threading.Thread(target=_pump, args=(process.stderr, "stderr", spec.world_rank, emit, tail),
                         name=f"orchestrator-rank{spec.world_rank}-stderr", daemon=True),
    ]
    for reader in readers:
        reader.start()
    code = process.wait()
    for reader in readers:
        reader.join()
    if code == 0 or stop.is_set():
        return ResultReport(world_rank=spec.world_rank, step=0, stopped=stop.is_set())
    return ErrorReport(world_rank=spec.world_rank, node_ip=spec.node_ip, error_type="ScriptFailed",
                       message=f"{os.path.basename(job.script.path)} exited with code {code}",
                       traceback="".join(tail))


def _pump(stream: TextIO, name: str, world_rank: int, emit, tail) -> None:
    for line in stream:
        emit(LogReport(world_rank=world_rank, stream=name, line=line.rstrip("\n")))
        if tail is not None:
            tail.append(line)
    stream.close()
