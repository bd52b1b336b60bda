"""Celery tasks: thin wrappers, each named explicitly and routed by its name."""
