"""Hyperparameter sweeps, the pure part: trial records and the summary, early stopping, admission.

The Hydra launcher plugin (`launchers/hydra_plugins/`) and the sweep's driver (`launchers/jobs/sweep_session.py`)
use these; nothing here imports ray, mlflow or hydra.
"""
