"""The application layer: one job end to end, and a sweep's session, trials and report."""
