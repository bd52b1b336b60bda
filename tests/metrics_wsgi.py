"""The web process with ``/metrics`` mounted beside the intake, as deploy/wsgi.py will compose
them (gunicorn serves ``tests.metrics_wsgi:app`` in tests/test_metrics.py)."""

from console.metrics import create_metrics_app
from receiver import create_app
from schemas.settings import Settings

settings = Settings.from_env()
receiver = create_app(settings)
metrics = create_metrics_app(settings)


def app(environ, start_response):
    target = metrics if environ.get("PATH_INFO") == "/metrics" else receiver
    return target(environ, start_response)
