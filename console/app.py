"""The console's application factory: settings in, a Flask app serving the API and the pages."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from flask import Flask, Response, jsonify, render_template, request
from sqlalchemy.exc import OperationalError as StoreError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from schemas import extensions
from schemas.broker import TaskQueue, redis_client, task_queue
from schemas.crypto import CryptoError
from schemas.settings import Settings, SettingsError
from workers.store.db import Store, store_for
from workers.store.search import SearchOff

from . import api, pages, security
from .params import BadArgs

log = logging.getLogger(__name__)

# Pages load only our own script and stylesheet: anything a payload smuggles into a page
# (escaped anyway) could not run, nor load or send anything.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass
class Console:
    """What the views need, built once per process (after gunicorn's fork)."""

    settings: Settings
    store: Store
    redis: redis.Redis
    tokens: security.ApiTokens
    tasks: TaskQueue
    throttle: security.SigninThrottle


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    extensions.load(settings.tavus_extensions)  # their kinds, channels: listed like ours
    if not settings.redis_url:
        raise SettingsError("REDIS_URL is not set (tavus-callbacks dev starts a Redis for you)")
    app = Flask(__name__)
    if settings.trusted_proxies:  # X-Forwarded-For / -Proto from that many proxies in front
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0)  # type: ignore[method-assign]
    client = redis_client(settings)
    app.extensions["console"] = Console(
        settings=settings,
        store=store_for(settings.database_url, settings.cipher),
        redis=client,
        tokens=security.ApiTokens(settings.api_tokens, settings.admin_api_tokens),
        tasks=task_queue(client, settings),
        throttle=security.SigninThrottle(client),
    )
    security.configure_sessions(app, settings)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.after_request(_security_headers)
    _register_error_handlers(app)
    return app


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/console"):
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        response.headers["X-Frame-Options"] = "DENY"
        if not request.path.startswith("/console/static/"):
            response.headers["Cache-Control"] = "no-store"
    return response


def wants_json() -> bool:
    return not request.path.startswith("/console")


def error_response(status: int, code: str, message: str, **extra: object) -> Response:
    if wants_json():
        response = jsonify({"error": code, "message": message, **extra})
    else:
        html = render_template("error.html", status=status, code=code, message=message)
        response = Response(html, mimetype="text/html")
    response.status_code = status
    return response


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(BadArgs)
    def bad_args(exc: BadArgs) -> Response:
        return error_response(422, "invalid_parameters", "see errors", errors=exc.messages)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, code, exc.description or exc.name)
        for name in ("WWW-Authenticate", "Retry-After", "Allow"):
            if exc.get_response().headers.get(name):
                response.headers[name] = exc.get_response().headers[name]
        return response

    @app.errorhandler(SearchOff)
    def search_off(exc: SearchOff) -> Response:
        return error_response(409, "search_off", str(exc))

    @app.errorhandler(CryptoError)
    def missing_key(exc: CryptoError) -> Response:
        log.error("cannot decrypt in %s: %s", request.endpoint, exc)
        return error_response(500, "encryption_key_missing", str(exc))

    @app.errorhandler(StoreError)
    def store_down(exc: StoreError) -> Response:
        log.error("store unavailable in %s: %s", request.endpoint, type(exc.orig).__name__)
        return error_response(503, "store_unavailable", "the event store did not answer; retry")

    @app.errorhandler(redis.RedisError)
    def redis_down(exc: Exception) -> Response:
        log.error("Redis unavailable in %s: %s", request.endpoint, type(exc).__name__)
        return error_response(503, "redis_unavailable", "Redis did not answer; retry")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.endpoint)
        return error_response(500, "internal_error", "unexpected error")
