"""Configuration, read from the environment in this one place.

The app factory, the Celery app and the CLI call ``Settings.from_env()``; tests pass a dict.
A marshmallow schema does the parsing, so a bad value fails at boot with the variable's name.
Cloud SDKs keep reading their own variables (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_CONNECTION_STRING``...), so they are not repeated here.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import unquote, urlsplit

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
    # Redis hands a message taken but never acked to another worker after this long; every
    # countdown we schedule stays below it, or a retry would be delivered twice.
    visibility_timeout_seconds: int = 3600
    max_event_attempts: int = 8
    dev_mode: bool = False
    # Where the receiver keeps events durably while Redis cannot take them (one file per event).
    spool_dir: str = ".tavus-callbacks/spool"
    # How often each web process looks for spooled events to drain; 0: only `spool drain` does.
    spool_drain_interval_seconds: float = 5.0
    # A request body not received completely within this long gets 408 (slow clients).
    body_timeout_seconds: float = 10.0
    # How many proxies in front append to X-Forwarded-For (Heroku's router: 1); 0 trusts none.
    trusted_proxies: int = 0
    # When set, only callers from these networks may post (403 otherwise); empty: anyone.
    allowed_source_cidrs: tuple[str, ...] = ()

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

    def secrets(self) -> tuple[str, ...]:
        """Every configured value that must never reach a log line: tokens, URL passwords."""
        found = list(self.callback_tokens)
        for url in (self.redis_url, self.database_url):
            try:
                password = urlsplit(url).password if url else None
            except ValueError:  # an unparsable URL fails later, with a clearer message
                password = None
            if password:
                found += {password, unquote(password)}
        return tuple(found)


def sqlalchemy_url(url: str) -> str:
    """Heroku's ``postgres://`` and a bare ``postgresql://`` mean psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _is_network(cidr: str) -> bool:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ValidationError(f"not a network: {cidr!r}") from exc
    return True


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
    dev_mode = f.Boolean(data_key="TAVUS_CALLBACKS_DEV")
    spool_dir = f.String(data_key="SPOOL_DIR")
    spool_drain_interval_seconds = f.Float(
        data_key="SPOOL_DRAIN_INTERVAL_SECONDS", validate=validate.Range(min=0)
    )
    body_timeout_seconds = f.Float(data_key="BODY_TIMEOUT_SECONDS", validate=validate.Range(min=1))
    trusted_proxies = f.Integer(data_key="TRUSTED_PROXIES", validate=validate.Range(min=0))
    allowed_source_cidrs = CommaList(
        data_key="ALLOWED_SOURCE_CIDRS", validate=lambda cidrs: all(map(_is_network, cidrs))
    )


_SCHEMA = _SettingsSchema()
assert {fl.name for fl in fields(Settings)} == set(_SCHEMA.fields), "schema and dataclass drifted"
