"""A script run in a host started ahead sees what it would see started cold: the same argv, sys.path, __file__,
__main__, working directory, environment, exit code and traceback; a host that started with other values of the
variables read at start is not used, and one never used ends when closed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.worker.script_host import ScriptHost, read_at_start, start_differences

PROBE = """
import json, os, sys
preloaded = "torch" in sys.modules  # before the script's own import
import torch
import helper  # from the script's folder, as sys.path[0] has it
import extra_mod  # from the PYTHONPATH the rank gets
print(json.dumps({
    "preloaded": preloaded, "argv": sys.argv, "path": sys.path, "file": __file__, "name": __name__,
    "main": sys.modules["__main__"].__file__, "cwd": os.getcwd(), "variable": os.environ.get("PROBE_VARIABLE"),
    "threads": torch.get_num_threads(), "doc": __doc__, "builtins": type(__builtins__).__name__, "helper": helper.VALUE, "extra": extra_mod.VALUE,
}))
if len(sys.argv) > 2:
    raise ValueError("planted " + sys.argv[2])
"""


@pytest.fixture
def probe(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The probe script in a folder of its own (with a helper module), a working directory elsewhere, and the
    rank's environment: a PYTHONPATH to another folder and a variable of the job's."""
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "probe.py").write_text('"""the probe"""\n' + PROBE)
    (tmp_path / "code" / "helper.py").write_text("VALUE = 'helper'\n")
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "extra_mod.py").write_text("VALUE = 'extra'\n")
    (tmp_path / "work").mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "extra"), "PROBE_VARIABLE": "set for the rank"}
    return tmp_path, env


def _cold(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-u", "../code/probe.py", *args], cwd=root / "work", env=env, capture_output=True, text=True
    )


def _warm(root: Path, env: dict[str, str], *args: str, started_with=None) -> subprocess.CompletedProcess[str]:
    host = ScriptHost(started_with)  # in the test's own environment: no PYTHONPATH, no PROBE_VARIABLE
    cwd = os.getcwd()
    os.chdir(root / "work")  # the host takes the working directory of the process that hands it the script
    try:
        assert host.takes(env)
        process = host.run("../code/probe.py", list(args), env)
    finally:
        os.chdir(cwd)
    out, err = process.communicate(timeout=120)
    os.close(host.report_read)
    return subprocess.CompletedProcess(process.args, process.returncode, out.decode(), err.decode())


def test_a_script_in_a_host_sees_what_it_sees_started_cold(probe):
    root, env = probe
    cold, warm = _cold(root, env, "--flag"), _warm(root, env, "--flag")
    assert cold.returncode == warm.returncode == 0, (cold.stderr, warm.stderr)
    seen_cold, seen_warm = json.loads(cold.stdout), json.loads(warm.stdout)
    assert seen_warm.pop("preloaded") is True and seen_cold.pop("preloaded") is False
    assert seen_warm == seen_cold
    assert seen_cold["argv"] == ["../code/probe.py", "--flag"] and seen_cold["name"] == "__main__"
    assert seen_cold["variable"] == "set for the rank" and seen_cold["doc"] == "the probe"


def test_a_failing_script_in_a_host_exits_and_prints_its_traceback_as_a_cold_one(probe):
    root, env = probe
    cold, warm = _cold(root, env, "--flag", "boom"), _warm(root, env, "--flag", "boom")
    assert cold.returncode == warm.returncode == 1
    assert "ValueError: planted boom" in cold.stderr
    assert warm.stderr == cold.stderr  # from the script's own frame, no frame of the host's


def test_torchs_cache_folder_set_while_preloading_is_the_jobs_when_equal_else_the_script_starts_cold(
    probe, monkeypatch
):
    """Importing torch._dynamo puts the default TORCHINDUCTOR_CACHE_DIR into os.environ and fixes a cache there;
    a worker whose torch did the same hands its jobs that value. Another value makes the host start the script
    cold, in its own process, which then sees the job's folder as a cold script would."""
    # importing torch's inductor sets it in this process too: recorded as it is now, put back at the end
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""))
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    root, env = probe
    env = {name: value for name, value in env.items() if name != "TORCHINDUCTOR_CACHE_DIR"}
    same = {**env, "TORCHINDUCTOR_CACHE_DIR": default_cache_dir()}
    other = {**env, "TORCHINDUCTOR_CACHE_DIR": str(root / "another-cache")}
    for job_env, preloaded in ((env, True), (same, True), (other, False)):
        warm, cold = _warm(root, job_env, "--flag", started_with=env), _cold(root, job_env, "--flag")
        assert warm.returncode == cold.returncode == 0, (warm.stderr, cold.stderr)
        seen_warm, seen_cold = json.loads(warm.stdout), json.loads(cold.stdout)
        assert seen_warm.pop("preloaded") is preloaded, job_env.get("TORCHINDUCTOR_CACHE_DIR")
        seen_cold.pop("preloaded")
        assert seen_warm == seen_cold


def test_a_host_is_not_used_for_other_values_of_variables_read_at_start(probe):
    _, env = probe
    host = ScriptHost({**env, "OMP_NUM_THREADS": "1"})
    try:
        assert not host.takes(env)
        assert start_differences(host.environ, env) == ["OMP_NUM_THREADS"]
        with pytest.raises(RuntimeError, match="cannot take the script"):
            host.run("probe.py", [], env)
        # the rank's own variables, the PYTHONPATH (the host applies it) and CUDA's device list differ freely
        assert host.takes({**env, "OMP_NUM_THREADS": "1", "RANK": "3", "PYTHONPATH": "/elsewhere"})
    finally:
        host.close()
    assert host.process.returncode == 0, "an unused host ends at the end of its control pipe"
    assert not host.alive()
    assert [read_at_start(name) for name in ("LANG", "PYTHONHASHSEED", "CUDA_VISIBLE_DEVICES", "TORCH_NCCL_X")] == [
        True,
        True,
        False,
        False,
    ]


# Records the names a Python-level read of os.environ asks for (get, [], in) while the host's modules import;
# whole-environment copies (dict(os.environ), items()) read every name and say nothing of what is used.
RECORD_READS = """
import json, os, sys
reads = set()
environ_type = type(os.environ)
getitem, contains = environ_type.__getitem__, environ_type.__contains__
def recorded_getitem(self, key):
    if sys._getframe(1).f_code.co_name not in ("__iter__", "copy", "__repr__", "__eq__"):
        reads.add(key)
    return getitem(self, key)
def recorded_contains(self, key):
    reads.add(key)
    return contains(self, key)
environ_type.__getitem__, environ_type.__contains__ = recorded_getitem, recorded_contains
for name in sys.argv[1:]:
    __import__(name)
print(json.dumps(sorted(reads)))
"""


def test_every_variable_the_preloaded_modules_read_as_they_import_counts_as_read_at_start():
    """A variable the host's imports read takes its value once, in the host: a job with another value must start
    cold. When torch reads a new one, this names it (add it to READ_AT_START_PREFIXES or _NAMES)."""
    from orchestrator.worker.script_host import PRELOADED

    done = subprocess.run(
        [sys.executable, "-c", RECORD_READS, *PRELOADED], capture_output=True, text=True, timeout=300, check=True
    )
    reads = json.loads(done.stdout.splitlines()[-1])
    assert len(reads) > 50  # the recording works: torch's configuration alone reads hundreds
    assert [name for name in reads if not read_at_start(name)] == []


def test_the_preloaded_modules_set_no_variable_but_those_whose_default_the_host_knows():
    from orchestrator.worker.script_host import PRELOADED, SET_WHILE_PRELOADING

    code = f"import json, os; before = dict(os.environ); [__import__(m) for m in {list(PRELOADED)!r}]; "
    code += "print(json.dumps(sorted(k for k in os.environ if os.environ[k] != before.get(k))))"
    env = {name: value for name, value in os.environ.items() if name not in SET_WHILE_PRELOADING}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300, check=True
    )
    assert set(json.loads(done.stdout.splitlines()[-1])) <= set(SET_WHILE_PRELOADING)
