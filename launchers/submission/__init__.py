"""Running `orchestrator train` on a remote cluster through Ray Job Submission."""
