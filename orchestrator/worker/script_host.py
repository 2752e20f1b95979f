"""A script's process started before the script is known: torch imported, waiting for one script to run.

A script job starts every rank's script in a new process (see orchestrator.worker.script), and that process
spends seconds importing torch before the script's first line. Where a worker knows a script will come (a
pool's worker, a sweep's reused worker after a script trial, a script job's spare), it starts a host ahead:
`python -u` that imports torch and then waits on a pipe. When the script comes, the host takes the rank's
environment, working directory, argv and sys.path as `python -u script.py args` would have them, and runs
the script as `__main__`. Each host runs one script and exits, so every attempt still gets a new process.

What a started process cannot take any more: variables read while the interpreter or torch starts (the
locale, PYTHONHASHSEED, OMP_NUM_THREADS, LD_PRELOAD, ...). When the rank's environment differs from the
host's in one of those, the host is not used and the script starts cold, as before.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import IO, Mapping, Optional

PRELOADED = ("torch", "torch.distributed", "torch._dynamo")
"""What the host imports while it waits: what a torchrun-style script imports first and spends its start on.
torch._dynamo is what DistributedDataParallel and torch.optim load at their first use (with sympy and the
inductor's config: 0.85 s of a small DDP script's way to its first step here, 73 MiB more per host)."""

# Variables the interpreter or a preloaded library reads while it starts (a change after that is ignored):
# by prefix or by name, less those read only later (PYTHONPATH is applied to sys.path by the host itself;
# breakpoint() reads PYTHONBREAKPOINT at each call; NCCL's and torch.distributed's at the process group's
# creation; CUDA_VISIBLE_DEVICES at CUDA's initialisation, which importing torch does not do). Native
# libraries read theirs with getenv (OMP_, MKL_, MALLOC_, LD_, ...); the Python-level reads of importing
# PRELOADED are listed from a recording of them (tests/worker/test_script_host.py keeps the lists complete).
READ_AT_START_PREFIXES = (
    "PYTHON",
    "LD_",
    "LC_",
    "LANG",
    "TMP",
    "TEMP",
    "OMP_",
    "KMP_",
    "GOMP_",
    "MKL_",
    "OPENBLAS_",
    "MALLOC_",
    "CUDA_",
    "PYTORCH_",
    "TORCH_",
    "TORCHDYNAMO_",
    "TORCHINDUCTOR_",
    "TORCHEXPORT_",
    "INDUCTOR_",
    "AOT_",
    "AOTINDUCTOR_",
    "TRITON_",
    "COMPILE_STROBELIGHT_",
    "FX_",
    "KINETO_",
    "NPY_",
    "NUMPY_",
    "SYMPY_",
    "MPMATH_",
    "_PYTHON_",
)
READ_AT_START_NAMES = (
    "TORCH_DISTRIBUTED_COMPILE_ON_ONE_RANK",
    "TORCH_DISTRIBUTED_USE_TORCHCOMMS",
    "CI",
    "CXX",
    "HOME",
    "USER",
    "USERNAME",
    "LOGNAME",
    "LNAME",
    "SAGE_ROOT",
    "CUTEDSL_ENABLE_AUTOTUNING",
    "CUTLASS_EPILOGUE_FUSION",
    "DUMP_AOTI_MINIFIER",
    "ENABLE_PERSISTENT_TMA_MATMUL",
    "ENABLE_TEMPLATE_TMA_STORE",
    "ENABLE_TMA_LOAD_FOR_TEMPLATE_EPILOGUE",
    "FAKE_ALLOW_META",
    "LOG_AUTOTUNE_RESULTS",
    "LOG_TLPARSE",
    "PARTITIONER_MEMORY_BUDGET_PARETO",
    "PARTITIONER_MEMORY_BUDGET_PARETO_DIR",
    "PT2_COMPILE_ID_PREFIX",
    "UNSAFE_SKIP_FSDP_MODULE_GUARDS",
)
SET_WHILE_PRELOADING = {"TORCHINDUCTOR_CACHE_DIR": "torch._inductor.runtime.cache_dir_utils:default_cache_dir"}
"""Variables read at start that the imports set when they are unset (torch's cache folder, its default made
from the user and the temp folder), with the function that makes their default: the host compares them
itself, as what it holds and what a cold start would take (a worker without torch cannot)."""
READ_LATER = ("PYTHONPATH", "PYTHONBREAKPOINT", "PYTHONUNBUFFERED", "CUDA_VISIBLE_DEVICES")
READ_LATER_PREFIXES = ("TORCH_NCCL_", "TORCH_DISTRIBUTED_")

# The host: ask the kernel for SIGKILL when the worker dies (as a cold script's launcher does), import
# what scripts import, wait for the script, then become it. The host's own names stay out of the script's
# globals: runpy runs it in a new __main__ module.
_HOST = r"""
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
os.getppid() == 1 and sys.exit(0)
_control, _preload = int(sys.argv[1]), sys.argv[2:]
_started_path = list(sys.path[1:])
for _name in _preload:
    try:
        __import__(_name)
    except ImportError:  # a script that needs it fails on its own import, as a cold one would
        pass
import json
with os.fdopen(_control, "r", encoding="utf-8") as _stream:
    _line = _stream.readline()
if not _line:
    sys.exit(0)
_job = json.loads(_line)
# The variables the imports set when unset (torch's cache folder), which the worker leaves to the host: where
# the job's value (its default where unset) is not the one held here, start cold instead, in this process
# (same pid, pipes and parent-death signal).
_env = _job["env"]


def _effective(values, name):
    if name in values:
        return values[name]
    module, _, function = _job["defaults"][name].partition(":")
    return getattr(__import__(module, fromlist=[function]), function)()


if any(_effective(_env, n) != _effective(os.environ, n) for n in _job["defaults"]):
    os.chdir(_job["cwd"])
    os.execve(sys.executable, [sys.executable, "-u", *_job["argv"]], _env)
_previous = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
os.environ.clear()
os.environ.update(_job["env"])
os.chdir(_job["cwd"])
_added = [os.path.abspath(p) for p in _job["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
_kept = [p for p in _started_path if p not in _previous]
sys.path[:] = list(dict.fromkeys([_job["script_dir"], *_added, *_kept]))
sys.argv = _job["argv"]
_script = os.path.join(os.getcwd(), _job["argv"][0])  # absolute, not normalised, as Python makes it
_print_error = sys.excepthook


def _from_the_script(kind, error, trace):
    # the error as a cold script's would be printed: from the script's first frame, without the host's
    start = trace
    while start is not None and start.tb_frame.f_code.co_filename != _script:
        start = start.tb_next
    _print_error(kind, error.with_traceback(start or trace), start or trace)


sys.excepthook = _from_the_script
# the script becomes __main__ as `python script.py` makes it (not runpy, which would change sys.argv[0] and
# put the host's module back at the end): absolute __file__, a source loader, no spec
import builtins, importlib.machinery, types
_main = types.ModuleType("__main__")
_main.__file__, _main.__cached__, _main.__builtins__ = _script, None, builtins
_main.__loader__ = importlib.machinery.SourceFileLoader("__main__", _script)
sys.modules["__main__"] = _main
with open(_script, "rb") as _source:
    _code = compile(_source.read(), _script, "exec", dont_inherit=True)
del _source, _stream, _line, _job, _env, _effective, _previous, _added, _kept, _started_path, _preload, _control
exec(_code, _main.__dict__)
"""


def read_at_start(name: str) -> bool:
    """Whether variable `name` is read as a process starts, so that a started host cannot take a new value."""
    if name in READ_AT_START_NAMES:
        return True
    if name in READ_LATER or name.startswith(READ_LATER_PREFIXES):
        return False
    return name.startswith(READ_AT_START_PREFIXES)


def start_differences(started_with: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """The variables, read at start, in which environment `wanted` differs from `started_with` (sorted); those the
    imports set (SET_WHILE_PRELOADING) are left to the host, which knows their defaults."""
    names = set(started_with) | set(wanted)
    return sorted(
        name
        for name in names
        if read_at_start(name) and name not in SET_WHILE_PRELOADING and started_with.get(name) != wanted.get(name)
    )


class ScriptHost:
    """One started host process, owned by the worker that started it; `close()` ends it if no script took it."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None, preload: tuple[str, ...] = PRELOADED):
        """Start the host with environment `environ` (default: this process's) importing `preload`."""
        self.environ = dict(os.environ if environ is None else environ)
        control_read, self._control_write = os.pipe()
        self.report_read, report_write = os.pipe()
        self.report_fd = report_write
        """The report pipe's write end, as the script sees it (its number is the same in the host)."""
        try:
            self.process: subprocess.Popen[bytes] = subprocess.Popen(
                [sys.executable, "-u", "-c", _HOST, str(control_read), *preload],
                env=self.environ,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(control_read, report_write),
            )
        except BaseException:
            for descriptor in (self._control_write, self.report_read):
                os.close(descriptor)
            raise
        finally:
            # the host holds the only read end of its control pipe and the only write end of its report pipe
            os.close(control_read)
            os.close(report_write)
        self._taken = False

    def alive(self) -> bool:
        """Whether the host is still waiting for a script (started, not taken, not died)."""
        return not self._taken and self.process.poll() is None

    def takes(self, env: Mapping[str, str]) -> bool:
        """Whether the host can still run a script with environment `env` (alive, unused, same start variables)."""
        return self.alive() and not start_differences(self.environ, env)

    def run(self, script: str, arguments: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        """Run `script arguments` in the host with environment `env`, in this process's working directory; the
        host's process, whose stdout and stderr are the script's. Only once, and only where `takes(env)`."""
        if not self.takes(env):
            raise RuntimeError(
                "this script host cannot take the script: it ran one already, died, or starts differently"
            )
        self._taken = True
        job = {
            "argv": [script, *arguments],
            "env": dict(env),
            "defaults": SET_WHILE_PRELOADING,
            "cwd": os.getcwd(),
            "script_dir": os.path.dirname(os.path.realpath(script)),
        }
        with os.fdopen(self._control_write, "w", encoding="utf-8") as control:
            control.write(json.dumps(job) + "\n")
        return self.process

    def close(self) -> None:
        """End the host if it never took a script (it reads the end of its control pipe and exits); release the
        pipes this side holds. A host that took a script belongs to that script's run, which waits for it."""
        if self._taken:
            return
        self._taken = True
        os.close(self._control_write)
        os.close(self.report_read)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # still importing: it would exit at its first read, end it now
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            _close(stream)


def _close(stream: Optional[IO[bytes]]) -> None:
    if stream is not None:
        stream.close()


class HostStarter:
    """Starts ScriptHosts from one thread of its own, which lives as long as this process.

    A child's parent-death signal (which ends a host when its worker dies) follows the *thread* that started
    the child, not the process: a host started from a rank's thread would be killed when that attempt's thread
    ends. The thread is a daemon: it ends with the process, as the hosts it started do.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[dict[str, str], Future[ScriptHost]]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def start(self, environ: Optional[Mapping[str, str]] = None) -> ScriptHost:
        """A new host with environment `environ` (default: this process's), started from the starter's thread."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="script-host-starter", daemon=True)
                self._thread.start()
        started: Future[ScriptHost] = Future()
        self._requests.put((dict(os.environ if environ is None else environ), started))
        return started.result()

    def _serve(self) -> None:
        while True:
            environ, started = self._requests.get()
            try:
                started.set_result(ScriptHost(environ))
            except BaseException as error:  # the caller gets it (e.g. no file descriptors left)
                started.set_exception(error)
