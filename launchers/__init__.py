"""Everything that talks to Ray: the cluster connection, the worker group and its actors, the per-node
monitors, job submission, the Hydra launcher, and the application layer that runs jobs and sweeps on them."""
