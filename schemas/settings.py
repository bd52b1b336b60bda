"""Configuration, read from the environment in this one place.

The app factory, the Celery app and the CLI call ``Settings.from_env()``; tests pass a dict.
A marshmallow schema does the parsing, so a bad value fails at boot with the variable's name.
Cloud SDKs keep reading their own variables (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``AZURE_STORAGE_CONNECTION_STRING``...), so they are not repeated here.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from email.utils import parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, pre_load, validate, validates_schema
from marshmallow import fields as f

from .messages import ALERT_CHANNELS, SEVERITIES

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


# Where each severity goes unless ALERT_ROUTES says otherwise (the log is always added).
DEFAULT_ALERT_ROUTES = (
    ("critical", ("slack", "webhook", "email")),
    ("error", ("slack", "webhook", "email")),
    ("warning", ("slack", "webhook")),
    ("info", ()),
)


@dataclass(frozen=True)
class ForwardDestination:
    """One ``FORWARD_<NAME>_*`` destination: where to post, how to sign, which events."""

    name: str  # <NAME>, lower-cased: "app" for FORWARD_APP_URL
    url: str = field(repr=False)
    secret: str = field(repr=False)  # whsec_<base64>
    events: tuple[str, ...] = ("*",)  # event types, kinds, "prefix.*" patterns or "*"

    @property
    def host(self) -> str:
        """What logs and errors may name: the host, never the URL (it may hold a token)."""
        return urlsplit(self.url).hostname or "the destination"

    def secrets(self) -> tuple[str, ...]:
        found = [self.secret]
        parts = urlsplit(self.url)
        for credential in (parts.password, parts.username):
            if credential:
                found += {credential, unquote(credential)}
        return tuple(found)


@dataclass(frozen=True)
class Settings:
    """Everything the processes are told by their environment. Field docs are in the README."""

    # Secrets, and URLs that may hold a password, are kept out of the repr (and so out of logs).
    callback_tokens: tuple[str, ...] = field(default=(), repr=False)
    # Tavus signs tool deliveries (auth.type "hmac") with X-Tavus-Signature; several secrets may
    # verify at once, so one can be rotated in while tools still sign with the old one.
    tavus_signing_secrets: tuple[str, ...] = field(default=(), repr=False)
    redis_url: str | None = field(
        default=None, repr=False
    )  # None: `tavus-callbacks dev` starts an embedded redis-server
    # Heroku Redis serves rediss:// with a self-signed certificate, so it is not verified unless
    # asked; the connection is still encrypted.
    redis_tls_verify: bool = False
    database_url: str = field(default="sqlite:///.tavus-callbacks/events.db", repr=False)
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
    # Alerts (README "Alerts"). The webhook URLs hold secrets too (a Slack URL is its own
    # credential), so none of these appear in the repr.
    slack_webhook_url: str | None = field(default=None, repr=False)
    alert_webhook_url: str | None = field(default=None, repr=False)
    alert_webhook_secret: str | None = field(default=None, repr=False)  # whsec_<base64>
    smtp_host: str | None = None
    smtp_port: int | None = None  # None: the port of SMTP_SECURITY (587, 465 or 25)
    smtp_username: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_security: str = "starttls"  # starttls, tls (implicit, "SMTPS") or none (a local sink)
    alert_email_from: str | None = None
    alert_email_to: tuple[str, ...] = ()
    alert_routes: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_ALERT_ROUTES
    alert_on_guardrail: bool = True
    alert_guardrail_severity: str = "warning"
    alert_delivery_attempts: int = 8
    alert_timeout_seconds: float = 10.0
    recording_retention_days: int = 30  # Daily keeps a recording Tavus could not copy this long

    # Recording verification. Only the listed buckets / containers are ever checked (empty:
    # verification is off); entries look like "s3:bucket", "gcs:bucket", "azure_blob:acct/cont".
    recording_locations: tuple[str, ...] = ()
    recording_wait_seconds: int = 900  # how long a recording may take to appear
    storage_timeout_seconds: float = 10.0  # connect and read timeout of every SDK call
    storage_retry_base_seconds: float = 5.0  # first retry delay; doubles, with jitter
    # The Azure SDK has no variable of its own for this; repr=False keeps the key out of logs.
    azure_storage_connection_string: str | None = field(default=None, repr=False)

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

    # Metrics (README "Metrics"). METRICS_TOKEN, when set, is the bearer token /metrics asks for;
    # WORKER_METRICS_PORT, when set, is where each worker node serves its own; and
    # PROMETHEUS_MULTIPROC_DIR is prometheus_client's own variable, the directory its
    # multiprocess mode shares between one process's children (None: a fresh one per start).
    metrics_token: str | None = field(default=None, repr=False)
    worker_metrics_port: int | None = None
    prometheus_multiproc_dir: str | None = None

    # The console (console/): read API tokens, the pages' password, and the key its session
    # cookies are signed with (derived from CONSOLE_PASSWORD and SECRET_KEY). No API token: the
    # API answers 404; no password: the pages answer 404. CONSOLE_ENABLED=false: web serves the
    # intake alone.
    api_tokens: tuple[str, ...] = field(default=(), repr=False)
    console_password: str | None = field(default=None, repr=False)
    console_enabled: bool = True
    secret_key: str | None = field(default=None, repr=False)

    # Forwarding to the user's own endpoints and Python hooks (README "Put it in front of your
    # app"). Destinations come from FORWARD_<NAME>_URL / _SECRET / _EVENTS; their secrets and
    # URLs (which may hold credentials) stay out of the repr.
    forward_destinations: tuple[ForwardDestination, ...] = field(default=(), repr=False)
    forward_timeout_seconds: float = 15.0
    forward_retry_hours: float = 24.0  # retried this long, measured from the first attempt
    tavus_hooks: tuple[str, ...] = ()  # modules whose @on(...) functions the workers run
    hook_max_attempts: int = 8
    hook_timeout_seconds: float = 60.0

    def alert_channels(self, severity: str) -> tuple[str, ...]:
        """Where an alert of ``severity`` goes: its route, and the log always."""
        routed = dict(self.alert_routes).get(severity, ())
        return ("log", *(channel for channel in routed if channel != "log"))

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

    def secrets(self) -> tuple[str, ...]:
        """Every configured value that must never reach a log line: tokens, URL passwords."""
        found = [*self.callback_tokens, *self.tavus_signing_secrets]
        for url in (self.redis_url, self.database_url):
            try:
                password = urlsplit(url).password if url else None
            except ValueError:  # an unparsable URL fails later, with a clearer message
                password = None
            if password:
                found += {password, unquote(password)}
        credentials = (
            self.slack_webhook_url,  # a Slack webhook URL is its own credential
            self.alert_webhook_secret,
            self.smtp_password,
            self.azure_storage_connection_string,
            self.metrics_token,
            self.console_password,
            self.secret_key,
            *self.api_tokens,
        )
        found += [value for value in credentials if value]
        if self.azure_storage_connection_string:
            found += re.findall(r"AccountKey=([^;]+)", self.azure_storage_connection_string)
        found += [secret for dest in self.forward_destinations for secret in dest.secrets()]
        return tuple(found)


def sqlalchemy_url(url: str) -> str:
    """Heroku's ``postgres://`` and a bare ``postgresql://`` mean psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class AlertRoutes(f.Field):
    """``"critical:slack+webhook+email, warning:slack"`` -> ``(("critical", ("slack", ...)), ...)``.

    The routes replace the defaults whole: a severity left out goes to the log only.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple:
        routes = []
        for item in CommaList().deserialize(value):
            severity, sep, channels = (part.strip() for part in item.partition(":"))
            if not sep or severity not in SEVERITIES:
                raise ValidationError(
                    f"{item!r}: expected <severity>:<channel>+<channel>, with a "
                    f"severity among {', '.join(SEVERITIES)}."
                )
            names = tuple(name.strip() for name in channels.split("+") if name.strip())
            unknown = [name for name in names if name not in ALERT_CHANNELS]
            if unknown:
                raise ValidationError(
                    f"unknown channel {unknown[0]!r}; known: {', '.join(ALERT_CHANNELS)}."
                )
            routes.append((severity, names))
        return tuple(routes)


def webhook_secret_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret, ``whsec_`` + base64 of 24 to 64 bytes."""
    if not secret.startswith("whsec_"):
        raise ValueError("must start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be whsec_ followed by base64") from None
    if not 24 <= len(key) <= 64:
        raise ValueError("must encode 24 to 64 random bytes")
    return key


def _webhook_secret(value: str) -> None:
    try:
        webhook_secret_key(value)
    except ValueError as exc:  # the message never repeats the secret
        raise ValidationError(str(exc)) from None


def _mailbox(value: str) -> bool:
    """``alerts@example.com`` or ``Tavus alerts <alerts@example.com>``."""
    _name, address = parseaddr(value)
    local, at, domain = address.partition("@")
    if not (local and at and domain) or "\r" in value or "\n" in value:
        raise ValidationError(f"{value!r} is not an email address.")
    return True


RECORDING_LOCATION = re.compile(r"^(?:(?:s3|gcs):[^/\s:]+|azure_blob:[^/\s:]+/[^/\s:]+)$")


def _recording_locations(entries: tuple[str, ...]) -> None:
    bad = [entry for entry in entries if not RECORDING_LOCATION.match(entry)]
    if bad:
        raise ValidationError(
            f"{bad}: expected s3:<bucket>, gcs:<bucket> or azure_blob:<account>/<container>"
        )


def _is_network(cidr: str) -> bool:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ValidationError(f"not a network: {cidr!r}") from exc
    return True


def _long_enough(name: str) -> Any:
    def check(token: str) -> bool:
        if len(token) < MIN_TOKEN_LENGTH:  # the message never repeats the token
            raise ValidationError(f"every {name} entry must be at least {MIN_TOKEN_LENGTH} chars")
        return True

    return check


# --- forwarding destinations: FORWARD_<NAME>_URL, _SECRET (required), _EVENTS (default *) ---

FORWARD_DESTINATIONS_KEY = "FORWARD_<NAME>_URL"
_FORWARD_URL = re.compile(r"^FORWARD_([A-Z0-9][A-Z0-9_]*)_URL$")
_EVENT_PATTERN = re.compile(r"^(\*|[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*(\.\*)?)$")
_HTTP_URL = validate.URL(schemes={"http", "https"}, require_tld=False)


def forward_destinations(environ: Mapping[str, str]) -> tuple[ForwardDestination, ...]:
    """Every destination the environment names, checked whole; errors name the variable only."""
    found = []
    for key in sorted(environ):
        match = _FORWARD_URL.match(key)
        if not match:
            continue
        name = match.group(1)
        prefix = f"FORWARD_{name}"
        try:
            _HTTP_URL(environ[key])
        except ValidationError:
            raise ValidationError("must be an http:// or https:// URL", key) from None
        secret = environ.get(f"{prefix}_SECRET")
        if not secret:
            raise ValidationError(f"required to sign {key}'s requests", f"{prefix}_SECRET")
        try:
            webhook_secret_key(secret)
        except ValueError as exc:  # the message never repeats the secret
            raise ValidationError(str(exc), f"{prefix}_SECRET") from None
        events = CommaList().deserialize(environ.get(f"{prefix}_EVENTS", "*")) or ("*",)
        bad = [pattern for pattern in events if not _EVENT_PATTERN.match(pattern)]
        if bad:
            raise ValidationError(
                f"{bad}: expected event types, kinds, prefix.* patterns or *", f"{prefix}_EVENTS"
            )
        found.append(ForwardDestination(name.lower(), environ[key], secret, events))
    return tuple(found)


class _SettingsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    callback_tokens = CommaList(data_key="CALLBACK_TOKENS")
    tavus_signing_secrets = CommaList(data_key="TAVUS_SIGNING_SECRETS")
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
    slack_webhook_url = f.Url(
        data_key="SLACK_WEBHOOK_URL", schemes={"https", "http"}, require_tld=False
    )
    alert_webhook_url = f.Url(
        data_key="ALERT_WEBHOOK_URL", schemes={"https", "http"}, require_tld=False
    )
    alert_webhook_secret = f.String(data_key="ALERT_WEBHOOK_SECRET", validate=_webhook_secret)
    smtp_host = f.String(data_key="SMTP_HOST")
    smtp_port = f.Integer(data_key="SMTP_PORT", validate=validate.Range(min=1, max=65535))
    smtp_username = f.String(data_key="SMTP_USERNAME")
    smtp_password = f.String(data_key="SMTP_PASSWORD")
    smtp_security = f.String(
        data_key="SMTP_SECURITY", validate=validate.OneOf(("starttls", "tls", "none"))
    )
    alert_email_from = f.String(data_key="ALERT_EMAIL_FROM", validate=_mailbox)
    alert_email_to = CommaList(
        data_key="ALERT_EMAIL_TO",
        validate=validate.And(validate.Length(min=1), lambda boxes: all(map(_mailbox, boxes))),
    )
    alert_routes = AlertRoutes(data_key="ALERT_ROUTES")
    alert_on_guardrail = f.Boolean(data_key="ALERT_ON_GUARDRAIL")
    alert_guardrail_severity = f.String(
        data_key="ALERT_GUARDRAIL_SEVERITY", validate=validate.OneOf(SEVERITIES)
    )
    alert_delivery_attempts = f.Integer(
        data_key="ALERT_DELIVERY_ATTEMPTS", validate=validate.Range(min=1, max=50)
    )
    alert_timeout_seconds = f.Float(
        data_key="ALERT_TIMEOUT_SECONDS", validate=validate.Range(min=0.1, max=120)
    )
    recording_retention_days = f.Integer(
        data_key="RECORDING_RETENTION_DAYS", validate=validate.Range(min=1)
    )

    @validates_schema
    def _alert_channels_are_whole(self, data: dict[str, Any], **kwargs: Any) -> None:
        """A half-configured channel would drop alerts in silence: refuse it at boot."""
        if data.get("alert_webhook_url") and not data.get("alert_webhook_secret"):
            raise ValidationError(
                "set ALERT_WEBHOOK_SECRET to sign ALERT_WEBHOOK_URL's requests",
                "ALERT_WEBHOOK_SECRET",
            )
        if data.get("smtp_host") and not (
            data.get("alert_email_from") and data.get("alert_email_to")
        ):
            raise ValidationError(
                "SMTP_HOST needs ALERT_EMAIL_FROM and ALERT_EMAIL_TO", "ALERT_EMAIL_TO"
            )
        if data.get("smtp_password") and data.get("smtp_security") == "none":
            raise ValidationError(
                "SMTP_SECURITY=none would send SMTP_PASSWORD in clear", "SMTP_SECURITY"
            )

    recording_locations = CommaList(data_key="RECORDING_LOCATIONS", validate=_recording_locations)
    recording_wait_seconds = f.Integer(
        data_key="RECORDING_WAIT_SECONDS", validate=validate.Range(min=0)
    )
    storage_timeout_seconds = f.Float(
        data_key="STORAGE_TIMEOUT_SECONDS", validate=validate.Range(min=0.1, max=300)
    )
    storage_retry_base_seconds = f.Float(
        data_key="STORAGE_RETRY_BASE_SECONDS", validate=validate.Range(min=0.1)
    )
    azure_storage_connection_string = f.String(data_key="AZURE_STORAGE_CONNECTION_STRING")
    spool_dir = f.String(data_key="SPOOL_DIR")
    spool_drain_interval_seconds = f.Float(
        data_key="SPOOL_DRAIN_INTERVAL_SECONDS", validate=validate.Range(min=0)
    )
    body_timeout_seconds = f.Float(data_key="BODY_TIMEOUT_SECONDS", validate=validate.Range(min=1))
    trusted_proxies = f.Integer(data_key="TRUSTED_PROXIES", validate=validate.Range(min=0))
    allowed_source_cidrs = CommaList(
        data_key="ALLOWED_SOURCE_CIDRS", validate=lambda cidrs: all(map(_is_network, cidrs))
    )

    # Metrics.
    metrics_token = f.String(
        data_key="METRICS_TOKEN", validate=validate.Length(min=MIN_TOKEN_LENGTH)
    )
    worker_metrics_port = f.Integer(
        data_key="WORKER_METRICS_PORT", validate=validate.Range(min=1, max=65535)
    )
    prometheus_multiproc_dir = f.String(data_key="PROMETHEUS_MULTIPROC_DIR")

    # The console (console/).
    api_tokens = CommaList(
        data_key="API_TOKENS",
        validate=lambda tokens: all(map(_long_enough("API_TOKENS"), tokens)),
    )
    console_password = f.String(data_key="CONSOLE_PASSWORD")
    console_enabled = f.Boolean(data_key="CONSOLE_ENABLED")
    secret_key = f.String(data_key="SECRET_KEY")

    # Forwarding to the user's endpoints and Python hooks. The destinations are gathered from
    # every FORWARD_<NAME>_URL in the environment (see _gather_destinations).
    forward_destinations = f.Raw(data_key=FORWARD_DESTINATIONS_KEY)
    forward_timeout_seconds = f.Float(
        data_key="FORWARD_TIMEOUT_SECONDS", validate=validate.Range(min=0.1, max=300)
    )
    forward_retry_hours = f.Float(data_key="FORWARD_RETRY_HOURS", validate=validate.Range(min=0))
    tavus_hooks = CommaList(data_key="TAVUS_HOOKS")
    hook_max_attempts = f.Integer(
        data_key="HOOK_MAX_ATTEMPTS", validate=validate.Range(min=1, max=100)
    )
    hook_timeout_seconds = f.Float(
        data_key="HOOK_TIMEOUT_SECONDS", validate=validate.Range(min=0.1, max=3600)
    )

    @pre_load
    def _gather_destinations(self, data: Mapping[str, str], **kwargs: Any) -> dict[str, Any]:
        data = {key: value for key, value in data.items() if key != FORWARD_DESTINATIONS_KEY}
        found = forward_destinations(data)
        if found:
            data[FORWARD_DESTINATIONS_KEY] = found
        return data


_SCHEMA = _SettingsSchema()
assert {fl.name for fl in fields(Settings)} == set(_SCHEMA.fields), "schema and dataclass drifted"


# Metrics: prometheus_client's multiprocess mode (README "Metrics"). It reads
# PROMETHEUS_MULTIPROC_DIR itself, when it is first imported, and its documentation asks for the
# directory to be wiped before each start; this does both, for gunicorn's master and for a Celery
# worker's main process, before any of their children import it.
MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(settings: Settings, prefix: str) -> str:
    """Empty (or make) this process's metrics directory and export it to its children.

    Only prometheus_client's own files (``*.db``) are removed, so a directory set by mistake to
    somewhere shared loses nothing else. Unset, each start gets a fresh temporary directory.
    """
    directory = settings.prometheus_multiproc_dir
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink(missing_ok=True)
    else:
        directory = tempfile.mkdtemp(prefix=f"tavus-callbacks-{prefix}-metrics-")
    os.environ[MULTIPROC_DIR_VARIABLE] = directory
    return directory


def multiprocess_dir_set() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR_VARIABLE))
