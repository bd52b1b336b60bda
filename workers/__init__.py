"""The worker side: the Celery app, event handlers, the event store, the CLI."""
