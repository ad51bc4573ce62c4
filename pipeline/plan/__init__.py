"""Plan a configuration from the data and a time budget (``python -m pipeline.plan``)."""
