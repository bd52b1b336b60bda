"""The receiver alone, as ``receiver.wsgi`` builds it, without its Prometheus instruments and
without the console beside it: what the intake measured before the metrics and the console came
(issue 11), so that the bench shows what the Procfile's ``deploy.wsgi:app`` pays for them."""

from flask import Flask

from receiver import create_app as create_receiver
from receiver import metrics


def create_app() -> Flask:
    app = create_receiver()
    app.before_request_funcs[None].remove(metrics.start_clock)
    app.after_request_funcs[None].remove(metrics.count_answer)
    return app
