"""Configuration, read from the environment in this one place.

The app factory, the Celery app and the CLI call ``Settings.from_env()``; tests pass a dict.
A marshmallow schema does the parsing, so a bad value fails at boot with the variable's name.
Cloud SDKs keep reading their own variables (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_CONNECTION_STRING``...), so they are not repeated here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, validate
from marshmallow import fields as f

MIB = 1024 * 1024
MIN_TOKEN_LENGTH = 16


class SettingsError(ValueError):
    """The environment describes a configuration we refuse to run with."""


class CommaList(f.Field):
    """``"a, b,,c"`` -> ``("a", "b", "c")``: how lists are written in one environment variable."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple:
        if not isinstance(value, str):
            raise ValidationError("Expected a comma-separated string.")
        return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the processes are told by their environment. Field docs are in the README."""

    callback_tokens: tuple[str, ...] = ()
    redis_url: str | None = None  # None: `tavus-callbacks dev` starts an embedded redis-server
    # Heroku Redis serves rediss:// with a self-signed certificate, so it is not verified unless
    # asked; the connection is still encrypted.
    redis_tls_verify: bool = False
    database_url: str = "sqlite:///.tavus-callbacks/events.db"
    max_body_bytes: int = 5 * MIB
    dedup_ttl_seconds: int = 7 * 24 * 3600
    # Redis hands a message taken but never acked to another worker after this long: it is how
    # long the events a SIGKILLed worker held wait before another worker gets them. Every
    # countdown we schedule stays below half of it (max_countdown_seconds), or a retry held by a
    # worker until its time would be handed out twice.
    visibility_timeout_seconds: int = 900
    max_event_attempts: int = 8
    # On SIGTERM (REMAP_SIGTERM=SIGQUIT) running tasks get this long before they are cancelled
    # and handed back to Redis; Heroku SIGKILLs 30 s after SIGTERM, so leave room to requeue.
    worker_soft_shutdown_seconds: float = 15.0
    # Reconciliation pulls what Tavus never delivered from its API; off without a key. The key
    # is kept out of repr() so that printing the settings cannot leak it.
    tavus_api_key: str | None = field(default=None, repr=False)
    tavus_api_url: str = "https://tavusapi.com"
    reconcile_interval_seconds: int = 300
    reconcile_grace_seconds: int = 600
    reconcile_batch_size: int = 20
    dev_mode: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if environ is None else environ
        present = {key: value for key, value in source.items() if value != ""}
        try:
            values = _SCHEMA.load(present)
        except ValidationError as exc:
            raise SettingsError(f"invalid environment: {exc.messages}") from exc
        if "database_url" in values:
            values["database_url"] = sqlalchemy_url(values["database_url"])
        return cls(**values)

    @property
    def max_countdown_seconds(self) -> float:
        """The longest delay any task may be scheduled with (half the visibility timeout)."""
        return self.visibility_timeout_seconds / 2

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    def check_for_serving(self) -> None:
        """Refuse to serve callbacks that anyone could post: a token is the only guard."""
        if self.dev_mode:
            return
        if not self.callback_tokens:
            raise SettingsError("CALLBACK_TOKENS is empty: set at least one secret token")
        short = [t for t in self.callback_tokens if len(t) < MIN_TOKEN_LENGTH]
        if short:
            raise SettingsError(
                f"every CALLBACK_TOKENS entry must be at least {MIN_TOKEN_LENGTH} characters"
            )


def sqlalchemy_url(url: str) -> str:
    """Heroku's ``postgres://`` and a bare ``postgresql://`` mean psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class _SettingsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    callback_tokens = CommaList(data_key="CALLBACK_TOKENS")
    redis_url = f.String(data_key="REDIS_URL")
    redis_tls_verify = f.Boolean(data_key="REDIS_TLS_VERIFY")
    database_url = f.String(data_key="DATABASE_URL")
    max_body_bytes = f.Integer(data_key="MAX_BODY_BYTES", validate=validate.Range(min=1024))
    dedup_ttl_seconds = f.Integer(data_key="DEDUP_TTL_SECONDS", validate=validate.Range(min=1))
    visibility_timeout_seconds = f.Integer(
        data_key="VISIBILITY_TIMEOUT_SECONDS", validate=validate.Range(min=5)
    )
    max_event_attempts = f.Integer(data_key="MAX_EVENT_ATTEMPTS", validate=validate.Range(min=1))
    worker_soft_shutdown_seconds = f.Float(
        data_key="WORKER_SOFT_SHUTDOWN_SECONDS", validate=validate.Range(min=0)
    )
    tavus_api_key = f.String(data_key="TAVUS_API_KEY")
    tavus_api_url = f.Url(data_key="TAVUS_API_URL", require_tld=False)
    reconcile_interval_seconds = f.Integer(
        data_key="RECONCILE_INTERVAL_SECONDS", validate=validate.Range(min=1)
    )
    reconcile_grace_seconds = f.Integer(
        data_key="RECONCILE_GRACE_SECONDS", validate=validate.Range(min=0)
    )
    reconcile_batch_size = f.Integer(
        data_key="RECONCILE_BATCH_SIZE", validate=validate.Range(min=1)
    )
    dev_mode = f.Boolean(data_key="TAVUS_CALLBACKS_DEV")


_SCHEMA = _SettingsSchema()
assert {fl.name for fl in fields(Settings)} == set(_SCHEMA.fields), "schema and dataclass drifted"
