"""The intake's span, when tracing is on (``schemas.tracing``): a SERVER span around
``POST /callbacks[/<token>]``, the root of the callback's trace; the enqueue inside it
(``schemas.broker``) carries the trace on to the worker.

Only wrapped in when ``create_app`` turned tracing on: with it off the view is Flask's as
written, and no OpenTelemetry module is imported. The span names the route, never the path
(it may hold the token). A ``traceparent`` sent to this public endpoint is not trusted: the
trace starts here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from schemas import tracing

from .errors import IntakeError

INTAKE_VIEW = "intake.receive"


def instrument(app: Flask) -> None:
    app.view_functions[INTAKE_VIEW] = traced_view(app.view_functions[INTAKE_VIEW])


def traced_view(view: Callable[..., Response]) -> Callable[..., Response]:
    @functools.wraps(view)
    def traced(*args: Any, **kwargs: Any) -> Response:
        attributes = {
            "http.request.method": request.method,
            "http.route": request.url_rule.rule if request.url_rule else None,
            "url.scheme": request.scheme,
            "http.request.body.size": request.content_length,
        }
        refused: Exception | None = None
        with tracing.span(f"{request.method} /callbacks", "server", attributes):
            try:
                response = view(*args, **kwargs)
            except (IntakeError, HTTPException) as exc:
                # An answer, not a fault of ours: Flask's error handlers write it.
                refused = exc
                status = exc.status if isinstance(exc, IntakeError) else exc.code or 500
                code = exc.code if isinstance(exc, IntakeError) else type(exc).__name__
                tracing.annotate(**{"http.response.status_code": status, "error.type": code})
                if status >= 500:
                    tracing.failed(str(code))
            else:
                tracing.annotate(**{"http.response.status_code": response.status_code})
        if refused is not None:
            raise refused
        return response

    return traced
