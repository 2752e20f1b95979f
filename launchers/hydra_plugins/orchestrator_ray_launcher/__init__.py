"""hydra/launcher=ray: the orchestrator's Hydra launcher plugin (found by Hydra in the hydra_plugins namespace)."""
