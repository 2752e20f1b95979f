"""The per-node monitor actors and the observer that runs them for a job."""
