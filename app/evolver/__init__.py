"""Background work: Celery app, thin tasks, and the pipelines they call."""
