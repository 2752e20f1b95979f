"""The Hydra side of hydra/launcher=ray: the trials of `orchestrator train -m`, and any Hydra app on Ray."""
