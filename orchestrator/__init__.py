"""orchestrator: one Hydra config -> distributed PyTorch DDP training on Ray, recorded in MLflow.

Importing the package is cheap: no torch, ray, mlflow or pynvml is imported until a command needs it.
"""

__version__ = "0.1.0"
