"""The application factory: settings in, a ready Flask app out."""

from __future__ import annotations

import logging

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from schemas import extensions, redaction, tracing
from schemas.broker import redis_client
from schemas.settings import Settings, SettingsError

from . import health, intake, metrics, openapi, traced
from .auth import SignatureChecker, TokenChecker
from .deadlines import ReadDeadlines
from .errors import IntakeError
from .publisher import Publisher
from .sources import SourceAllowlist
from .spool import Drainer, Spool

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    settings.check_for_serving()
    extensions.load(settings.tavus_extensions)  # a kind of theirs is classified like ours
    if not settings.redis_url:
        raise SettingsError("REDIS_URL is not set (tavus-callbacks dev starts a Redis for you)")
    redaction.install(settings.secrets(), log_format=settings.log_format)
    app = Flask("receiver")
    # Werkzeug refuses a longer body with 413 before reading it, chunked bodies included.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    client = redis_client(settings)
    publisher = Publisher(
        client,
        settings.dedup_ttl_seconds,
        settings.redis_min_replicas,
        settings.redis_replica_timeout_ms,
    )
    spool = Spool(settings.spool_dir)
    drainer = Drainer(spool, publisher.publish, settings.spool_drain_interval_seconds)
    drainer.start()  # gunicorn builds the app in each worker, after the fork
    app.extensions["intake"] = intake.Intake(
        tokens=TokenChecker(settings.callback_tokens),
        publisher=publisher,
        drainer=drainer,
        sources=SourceAllowlist(settings.allowed_source_cidrs, settings.trusted_proxies),
        deadlines=ReadDeadlines(settings.body_timeout_seconds),
        signatures=SignatureChecker(settings.tavus_signing_secrets),
        cipher=settings.cipher,
    )
    app.extensions["readiness"] = health.Readiness(client, spool)
    app.register_blueprint(intake.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    metrics.instrument(app)
    if tracing.start(
        "tavus-callbacks-web", settings.tracing
    ):  # OTEL_EXPORTER_OTLP_ENDPOINT (docs/tracing.md)
        traced.instrument(app)
    _register_error_handlers(app)
    return app


def _json_error(status: int, code: str, message: str) -> Response:
    body = orjson.dumps({"error": code, "message": message})
    return Response(body, status=status, mimetype="application/json")


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(IntakeError)
    def intake_error(exc: IntakeError) -> Response:
        return _json_error(exc.status, exc.code, exc.message)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Response:
        limit = app.config["MAX_CONTENT_LENGTH"]
        body = orjson.dumps(
            {
                "error": "request_entity_too_large",
                "message": f"the body is larger than the limit of {limit} bytes (MAX_BODY_BYTES)",
                "limit_bytes": limit,
            }
        )
        return Response(body, status=413, mimetype="application/json")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _json_error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # The path may hold the token: log the endpoint, never the URL.
        log.exception("unexpected error in %s %s", request.method, request.endpoint)
        return _json_error(500, "internal_error", "unexpected error; the event was not accepted")
