"""The worker side: the Celery app, its tasks, the event handlers, the store, the ledgers."""
