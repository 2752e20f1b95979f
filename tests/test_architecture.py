"""Imports go one way: the pure core and `import orchestrator` pull in no heavy library."""

from __future__ import annotations

import subprocess
import sys

PURE_MODULES = [
    "orchestrator", "orchestrator.config.schema", "orchestrator.config.load", "orchestrator.config.export",
    "orchestrator.planning.plan", "orchestrator.planning.placement", "orchestrator.planning.rank_specs", "orchestrator.lifecycle.controller", "orchestrator.lifecycle.worker_group",
    "orchestrator.lifecycle.rank_reports", "orchestrator.cli.console", "orchestrator.tracking.metrics_sink", "orchestrator.errors",
    "orchestrator.lifecycle.failure_policy",
    "orchestrator.kubernetes.rayjob",
    "orchestrator.monitoring", "orchestrator.monitoring.gpu_devices", "orchestrator.monitoring.gpu_probe", "orchestrator.monitoring.detectors",
    "orchestrator.monitoring.summaries", "orchestrator.monitoring.metric_names", "orchestrator.monitoring.routing",
    "orchestrator.monitoring.node_sampler",
    "orchestrator.cli.job_summary", "orchestrator.tracking.metric_writer", "orchestrator.redaction",
    "orchestrator.tracking.console_log", "orchestrator.tracking.store_guard", "orchestrator.tracking.transport",
    "orchestrator.tracking.run_recorder", "orchestrator.cli.compare_table", "orchestrator.cli.compare", "orchestrator.cli.compare_plot",
    "orchestrator.sweep", "orchestrator.sweep.trials", "orchestrator.sweep.early_stop", "orchestrator.sweep.admission",
]
HEAVY = ["ray", "mlflow", "pynvml", "torch", "torch.distributed", "hydra"]


def test_pure_modules_import_no_ray_mlflow_pynvml_or_torch():
    code = (f"import importlib, sys\nfor name in {PURE_MODULES!r}: importlib.import_module(name)\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"pure modules pulled in: {loaded}"


def test_the_hydra_launcher_plugin_imports_nothing_heavy():
    """Hydra imports every plugin module whenever it composes a config: ours defers the sweep's code."""
    code = ("import sys, hydra_plugins.orchestrator_ray_launcher.ray_launcher\n"
            "print(','.join(m for m in ['ray', 'mlflow', 'torch', 'launchers.jobs.sweep_session'] if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"the launcher plugin pulled in: {loaded}"


def test_a_script_worker_imports_no_torch():
    # a script-mode rank's actor only runs the user's script, which imports torch in its own process: a
    # second torch import in the actor costs every rank seconds of CPU at job start on a small machine
    code = ("import sys\nimport launchers.workers.rank_actor, orchestrator.worker.entry, orchestrator.worker.script\n"
            "print('torch' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"


def test_the_driver_imports_no_torch_before_its_job_starts():
    # the driver's start (config, ray.init, placement, actors) is the time to the first step; torch's
    # import there would add seconds of one core. It is imported later, to log the trained model.
    code = ("import sys\nimport orchestrator.cli.commands, launchers.jobs.job_runner, launchers.workers.ray_worker_group, launchers.cluster.connection\n"
            "print('torch' in sys.modules)")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "False"
