"""An example of your own code for the orchestrator: a model, a data set read from PNG files, a loss."""
