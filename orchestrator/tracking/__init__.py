"""The run record: MLflow writes, metric buffering, the console log, redaction, the local server."""
