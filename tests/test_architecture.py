"""Imports go one way: the pure core and `import orchestrator` pull in no heavy library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

LIGHT_MODULES = [
    "orchestrator",
    "orchestrator.config.schema",
    "orchestrator.config.load",
    "orchestrator.config.export",
    "orchestrator.planning.plan",
    "orchestrator.planning.placement",
    "orchestrator.planning.rank_specs",
    "orchestrator.lifecycle.controller",
    "orchestrator.lifecycle.worker_group",
    "orchestrator.lifecycle.rank_reports",
    "orchestrator.lifecycle.failure_policy",
    "orchestrator.cli.console",
    "orchestrator.tracking.metrics_sink",
    "orchestrator.errors",
    "orchestrator.kubernetes.rayjob",
    "orchestrator.monitoring",
    "orchestrator.monitoring.gpu_devices",
    "orchestrator.monitoring.gpu_probe",
    "orchestrator.monitoring.detectors",
    "orchestrator.monitoring.summaries",
    "orchestrator.monitoring.metric_names",
    "orchestrator.monitoring.samples",
    "orchestrator.monitoring.routing",
    "orchestrator.monitoring.routing",
    "orchestrator.monitoring.node_sampler",
    "orchestrator.cli.job_summary",
    "orchestrator.tracking.metric_writer",
    "orchestrator.redaction",
    "orchestrator.tracking.console_log",
    "orchestrator.tracking.store_guard",
    "orchestrator.tracking.transport",
    "orchestrator.tracking.run_recorder",
    "orchestrator.cli.compare_table",
    "orchestrator.cli.compare",
    "orchestrator.cli.compare_plot",
    "orchestrator.sweep",
    "orchestrator.sweep.trials",
    "orchestrator.sweep.early_stop",
    "orchestrator.sweep.admission",
    "orchestrator.sweep.judging",
    "orchestrator.sweep.optuna_settings",
    "orchestrator.sweep.pruning",
    "orchestrator.sweep.search_space",
]
"""Modules that import no heavy library when imported (they may import one inside a function that needs it)."""
HEAVY = ["ray", "mlflow", "pynvml", "torch", "torch.distributed", "hydra"]

PURE_MODULES = [
    "orchestrator.errors",
    "orchestrator.redaction",
    "orchestrator.config.schema",
    "orchestrator.config.export",
    "orchestrator.config.problems",
    "orchestrator.config.rules",
    "orchestrator.planning.plan",
    "orchestrator.planning.placement",
    "orchestrator.planning.preflight",
    "orchestrator.planning.rank_specs",
    "orchestrator.lifecycle.failure_policy",
    "orchestrator.lifecycle.rank_reports",
    "orchestrator.lifecycle.worker_group",
    "orchestrator.kubernetes.rayjob",
    "orchestrator.sweep.trials",
    "orchestrator.sweep.admission",
    "orchestrator.sweep.judging",
    "orchestrator.monitoring.gpu_devices",
    "orchestrator.monitoring.detectors",
    "orchestrator.monitoring.summaries",
    "orchestrator.monitoring.metric_names",
    "orchestrator.monitoring.samples",
    "orchestrator.monitoring.routing",
    "orchestrator.cli.compare_table",
    "orchestrator.cli.job_summary",
    "orchestrator.registry.names",
    "orchestrator.registry.model_ref",
    "orchestrator.registry.promotion",
    "orchestrator.registry.version_tags",
    "orchestrator.export.parity",
    "orchestrator.export.failures",
]
"""Pure planning and rendering: decisions from values, nothing that talks to a cluster, a store, a GPU, a
process or a thread, not even in a function body, and nothing they import from the package does either."""
IMPURE = (
    "ray",
    "mlflow",
    "pynvml",
    "torch.distributed",
    "omegaconf",
    "hydra",
    "subprocess",
    "threading",
    "multiprocessing",
    "concurrent.futures",
    "socket",
    "psutil",
)
ROOT = Path(__file__).resolve().parents[1]


def _imports(module: str) -> set[str]:
    """Every module `module`'s source imports, at the top or in any function body."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = ROOT / module.replace(".", "/") / "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _is_module(name: str) -> bool:
    path = ROOT / name.replace(".", "/")
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_pure_modules_and_what_they_import_from_the_package_touch_no_cluster_store_process_or_thread():
    problems = []
    for pure in PURE_MODULES:
        seen, todo = set(), [pure]
        while todo:  # the package's modules it reaches, by their imports
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            for name in _imports(module):
                if any(name == bad or name.startswith(bad + ".") for bad in IMPURE):
                    problems.append(f"{pure}: {module} imports {name}")
                elif name.startswith("orchestrator.") and _is_module(name):
                    todo.append(name)
    assert problems == []


def test_pure_modules_import_no_ray_mlflow_pynvml_or_torch():
    code = (
        f"import importlib, sys\nfor name in {LIGHT_MODULES!r}: importlib.import_module(name)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"pure modules pulled in: {loaded}"


def test_the_hydra_launcher_plugin_imports_nothing_heavy():
    """Hydra imports every plugin module whenever it composes a config: ours defers the sweep's code."""
    code = (
        "import sys, hydra_plugins.orchestrator_ray_launcher.ray_launcher\n"
        "print(','.join(m for m in ['ray', 'mlflow', 'torch', 'launchers.jobs.sweep_session'] if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"the launcher plugin pulled in: {loaded}"


def test_the_optuna_sweeper_plugin_imports_nothing_heavy():
    """Hydra imports the sweeper plugin on every composition too: Optuna and the sweep's code wait for a sweep."""
    code = (
        "import sys, hydra_plugins.orchestrator_optuna_sweeper.optuna_sweeper\n"
        "print(','.join(m for m in ['ray', 'mlflow', 'torch', 'optuna', 'launchers.hydra_launcher.optuna_sweep'] "
        "if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"the sweeper plugin pulled in: {loaded}"


def test_a_script_worker_imports_no_torch():
    # a script-mode rank's actor only runs the user's script, which imports torch in its own process: a
    # second torch import in the actor costs every rank seconds of CPU at job start on a small machine
    code = (
        "import sys\nimport launchers.workers.rank_actor, orchestrator.worker.entry, orchestrator.worker.script\n"
        "print('torch' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"


def test_the_driver_imports_no_torch_before_its_job_starts():
    # the driver's start (config, ray.init, placement, actors) is the time to the first step; torch's
    # import there would add seconds of one core. It is imported later, to log the trained model.
    code = (
        "import sys\nimport orchestrator.cli.commands, launchers.jobs.job_runner, launchers.workers.ray_worker_group, launchers.cluster.connection\n"
        "print('torch' in sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
