"""orchestrator: one Hydra config -> distributed PyTorch DDP training on Ray, recorded in MLflow.

Importing the package is cheap: no torch, ray, mlflow or pynvml is imported until a command needs it.
A torchrun-style script uses the four functions below (see orchestrator.api); the same script runs
under the orchestrator (entrypoint=script), under plain torchrun, or as one process.
"""

from orchestrator.api import Context, context, load_checkpoint, report, save_checkpoint

__version__ = "0.1.0"
__all__ = ["Context", "context", "load_checkpoint", "report", "save_checkpoint", "__version__"]
