"""hydra/sweeper=optuna: the orchestrator's Optuna sweeper plugin (found by Hydra in the hydra_plugins namespace)."""
