"""Where the ranks find the user's own code: pure, imports nothing of the user's.

The driver imports a `_target_` from its working directory or a PYTHONPATH folder. The folder that
holds its top-level module goes to the ranks as PYTHONPATH, so ranks on the driver's machine, or on
nodes that share its filesystem, import the same code; packages installed as libraries (torch, a
pip-installed package of the user's) are left to the workers' own environment. On a cluster without
a shared filesystem, cluster.runtime_env (working_dir, py_modules) or `orchestrator submit` ships the
code (docs/your-code.md: your own code on a cluster).
"""

from __future__ import annotations

import importlib.util
import os
import sysconfig
from typing import Any, Mapping, Optional

from orchestrator.config.schema import (
    JobConfig,
    TargetConfig,
    TargetDataConfig,
    TargetModelConfig,
)

PYTHONPATH = "PYTHONPATH"


def _installed_roots() -> list[str]:
    paths = sysconfig.get_paths()
    return [os.path.realpath(paths[key]) for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths]


def import_root(module_name: str) -> Optional[str]:
    """The sys.path folder the driver imports top-level module `module_name` from, when it is the user's own
    (not an installed library); None for installed or unknown modules."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None  # the driver's check reports it
    if spec.submodule_search_locations:
        location = os.path.dirname(os.path.realpath(list(spec.submodule_search_locations)[0]))
    elif spec.origin and os.path.isfile(spec.origin):
        location = os.path.dirname(os.path.realpath(spec.origin))
    else:
        return None  # built into the interpreter
    if any(location == root or location.startswith(root + os.sep) for root in _installed_roots()):
        return None
    return location


def target_paths(job: JobConfig) -> list[str]:
    """The dotted paths of the user's callables in `job` (model, data, loss, trainer.step_fn)."""
    paths = [
        node.target
        for node in (job.model, job.data, job.loss)
        if isinstance(node, (TargetModelConfig, TargetDataConfig, TargetConfig))
    ]
    if job.trainer.step_fn:
        paths.append(job.trainer.step_fn)
    return list(dict.fromkeys(paths))


def worker_runtime_env(job: JobConfig, environ: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """The ranks' runtime_env: cluster.runtime_env, with the folders of the user's own modules added to the
    ranks' PYTHONPATH (after the one set in cluster.runtime_env.env_vars, else the driver's)."""
    env = dict(job.cluster.runtime_env)
    if env.get("env_vars"):  # Ray takes text only; validation let whole numbers through (OMP_NUM_THREADS=1)
        env["env_vars"] = {str(name): str(value) for name, value in env["env_vars"].items()}
    roots = [root for root in dict.fromkeys(import_root(t.split(".")[0]) for t in target_paths(job)) if root]
    if not roots:
        return env
    variables = dict(env.get("env_vars") or {})
    inherited = variables.get(PYTHONPATH) or (os.environ if environ is None else environ).get(PYTHONPATH, "")
    kept = [part for part in inherited.split(os.pathsep) if part]
    variables[PYTHONPATH] = os.pathsep.join([*kept, *[root for root in roots if root not in kept]])
    env["env_vars"] = variables
    return env
