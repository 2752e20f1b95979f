"""The warm pool: rank processes kept on a running cluster for the jobs that lease them (cluster.pool)."""
