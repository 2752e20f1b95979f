"""The MLflow Model Registry: registering a run's model, choosing and promoting versions, model references."""
