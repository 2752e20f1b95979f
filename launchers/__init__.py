"""Adapters that run jobs on Ray: cluster connection, worker group, job submission, Hydra launcher."""
