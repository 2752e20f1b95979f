"""The job's lifecycle: the controller's states, the worker group it drives, failures, resume."""
