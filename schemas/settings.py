"""Configuration, read from the environment once, by an entry point, and passed down.

Each setting is declared once, as a field of ``Settings`` made by ``Section.setting``: its
environment variable, its parser (a marshmallow field, with its validation), its default and
the sentence the configuration reference prints (``tavus-callbacks config docs`` writes
``docs/configuration.md`` from these declarations). A bad value fails at boot with the
variable's name, never its value.

Settings repeated per destination (``FORWARD_<NAME>_*``) are declared the same way: the ones
every destination has here (``FORWARD_DESTINATION``), a destination type's own ones in its
module (``DestinationSettings``), chosen by the scheme of ``FORWARD_<NAME>_URL``.

Adding a setting is one field below, ``name: type = SECTION.setting("VARIABLE", parser,
default, "what it means")``, then ``tavus-callbacks config docs``. A destination type's own
setting is one ``per_destination("SUFFIX", parser, default, "what it means")`` in the
``DestinationSettings`` of its module (see ``workers/destinations/webhook.py``).

Cloud SDKs keep reading their own variables (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``...),
so they are not repeated here.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from email.utils import parseaddr
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from marshmallow import EXCLUDE, Schema, ValidationError, validate, validates_schema
from marshmallow import fields as f

from . import crypto, tracing
from .messages import SEVERITIES

MIB = 1024 * 1024
MIN_TOKEN_LENGTH = 16
DECLARED = "setting"  # the key of a Settings field's declaration in its metadata


class SettingsError(ValueError):
    """The environment describes a configuration we refuse to run with."""


# --- declarations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """A heading of the configuration reference, and the settings declared under it."""

    title: str
    about: str = ""

    def setting(
        self,
        env: str,
        parse: f.Field,
        default: Any,
        doc: str,
        *,
        secret: bool = False,
        credentials: bool = False,
        shown_default: str | None = None,
    ) -> Any:
        """A ``Settings`` field read from ``env`` by ``parse`` (which validates it too).

        A ``secret`` is redacted from every log line, and a URL that may hold ``credentials``
        has its password redacted; both stay out of the repr. ``shown_default`` is what the
        reference prints when the default itself says too little.
        """
        parse.data_key = env
        declared = Declaration(env, parse, default, doc, secret, credentials, shown_default, self)
        hidden = secret or credentials
        return field(default=default, repr=not hidden, metadata={DECLARED: declared})


@dataclass(frozen=True)
class Declaration:
    """One setting: its variable, parser, default and documentation row."""

    env: str  # the variable; for a per-destination setting, the part after FORWARD_<NAME>_
    parse: f.Field
    default: Any
    doc: str
    secret: bool = False
    credentials: bool = False  # a URL whose password is a secret
    shown_default: str | None = None
    section: Section | None = None


def per_destination(
    suffix: str,
    parse: f.Field,
    default: Any,
    doc: str,
    *,
    secret: bool = False,
    credentials: bool = False,
) -> Declaration:
    """A setting each destination of a type has: ``FORWARD_<NAME>_<suffix>``."""
    parse.data_key = suffix
    return Declaration(suffix, parse, default, doc, secret, credentials)


# --- parsers that several settings share --------------------------------------------------


class CommaList(f.Field):
    """``"a, b,,c"`` -> ``("a", "b", "c")``: how lists are written in one environment variable."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple:
        if not isinstance(value, str):
            raise ValidationError("Expected a comma-separated string.")
        return tuple(item.strip() for item in value.split(",") if item.strip())


RATE_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


class Rate(f.String):
    """``"10/s"``, ``"600/m"``, ``"3600/h"`` -> ``(10, 1.0)``...: at most that many per period."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> tuple:
        text = super()._deserialize(value, attr, data, **kwargs)
        count, _, period = text.strip().partition("/")
        if not (count.isdigit() and int(count) > 0 and period in RATE_PERIODS):
            raise ValidationError("expected <count>/s, <count>/m or <count>/h, e.g. 10/s")
        return (int(count), RATE_PERIODS[period])


class DatabaseUrl(f.String):
    """A SQLAlchemy URL; Heroku's ``postgres://`` and a bare ``postgresql://`` mean psycopg 3."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return sqlalchemy_url(super()._deserialize(value, attr, data, **kwargs))


def sqlalchemy_url(url: str) -> str:
    """Heroku's ``postgres://`` and a bare ``postgresql://`` mean psycopg 3, the driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


_CHANNEL_NAME = re.compile(r"[a-z0-9_]+")


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
            # Which channels exist is the workers' to say (extensions add some): checked there.
            bad = [name for name in names if not _CHANNEL_NAME.fullmatch(name)]
            if bad:
                raise ValidationError(f"{bad[0]!r} is no channel name ([a-z0-9_]+).")
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


def webhook_secret(value: str) -> None:
    """A validator: ``value`` is a Standard Webhooks secret (the message never repeats it)."""
    try:
        webhook_secret_key(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _mailbox(value: str) -> bool:
    """``alerts@example.com`` or ``Tavus alerts <alerts@example.com>``."""
    _name, address = parseaddr(value)
    local, at, domain = address.partition("@")
    if not (local and at and domain) or "\r" in value or "\n" in value:
        raise ValidationError(f"{value!r} is not an email address.")
    return True


# <provider>:<place>; each provider checks its own form when the worker starts (extensions add
# providers, so which ones exist is the workers' to say).
RECORDING_LOCATION = re.compile(r"^[a-z0-9_]+:[^\s:]+$")


def _recording_locations(entries: tuple[str, ...]) -> None:
    bad = [entry for entry in entries if not RECORDING_LOCATION.match(entry)]
    if bad:
        raise ValidationError(
            f"{bad}: expected <provider>:<place>, e.g. s3:<bucket>, gcs:<bucket> or "
            "azure_blob:<account>/<container>"
        )


def _is_host_port(node: str) -> bool:
    host, _, port = node.rpartition(":")
    if not (host and port.isdigit() and 0 < int(port) < 65536):
        raise ValidationError("every entry must be host:port")
    return True


def _is_network(cidr: str) -> bool:
    try:
        ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ValidationError(f"not a network: {cidr!r}") from exc
    return True


def named_token(entry: str) -> tuple[str | None, str]:
    """``name:token`` -> ``("name", "token")``; a bare token -> ``(None, token)``. A name is a
    short word (letters, digits, ``._-``), so a token holding a colon stays whole."""
    name, colon, token = entry.partition(":")
    if colon and _TOKEN_NAME.fullmatch(name):
        return name, token
    return None, entry


_TOKEN_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


def _long_enough(name: str) -> Any:
    def check(tokens: tuple[str, ...]) -> bool:
        secrets_only = [named_token(token)[1] for token in tokens]
        if any(len(token) < MIN_TOKEN_LENGTH for token in secrets_only):  # never repeats it
            raise ValidationError(f"every {name} entry must be at least {MIN_TOKEN_LENGTH} chars")
        return True

    return check


def _fernet_keys(keys: tuple[str, ...]) -> bool:
    bad = [str(place) for place, key in enumerate(keys, 1) if not crypto.is_key(key)]
    if bad:  # by position: never the value
        raise ValidationError(
            f"entry {', '.join(bad)} is no Fernet key (32 bytes, URL-safe base64); "
            "`tavus-callbacks keys generate` prints one"
        )
    return True


_EVENT_PATTERN = re.compile(r"^(\*|[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*(\.\*)?)$")


def _event_patterns(patterns: tuple[str, ...]) -> None:
    bad = [pattern for pattern in patterns if not _EVENT_PATTERN.match(pattern)]
    if bad:
        raise ValidationError(f"{bad}: expected event types, kinds, prefix.* patterns or *")


# ``azure_blob://`` too: an underscore RFC 3986 does not allow, so urlsplit would not see it.
_DESTINATION_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-_]*)://")


def split_destination_url(url: str) -> SplitResult:
    """``urlsplit`` of a ``FORWARD_<NAME>_URL``, its scheme kept even with an underscore."""
    found = _DESTINATION_SCHEME.match(url)
    if found is None:
        return urlsplit(url)
    return urlsplit("x" + url[found.end(1) :])._replace(scheme=found.group(1))


def _destination_url(url: str) -> None:
    """Any ``scheme://place`` URL; the scheme picks the destination type, which checks the rest."""
    try:
        parts = split_destination_url(url)
    except ValueError:
        parts = None
    if not (parts and _DESTINATION_SCHEME.match(url) and parts.netloc):
        raise ValidationError("must be a URL, <scheme>://<place>; its scheme picks the type")


def _range(low: float | None = None, high: float | None = None) -> validate.Range:
    return validate.Range(min=low, max=high)


# Where each severity goes unless ALERT_ROUTES says otherwise (the log is always added).
DEFAULT_ALERT_ROUTES = (
    ("critical", ("slack", "webhook", "email")),
    ("error", ("slack", "webhook", "email")),
    ("warning", ("slack", "webhook")),
    ("info", ()),
)


# --- the settings ---------------------------------------------------------------------------

INTAKE = Section("Intake", "What the receiver (the `web` process) accepts, and from whom.")
CORE = Section("Redis, the store and the workers")
RECONCILIATION = Section(
    "Missed callbacks (reconciliation)",
    "`beat` pulls what Tavus never delivered from its API; off without `TAVUS_API_KEY`.",
)
ALERTS = Section(
    "Alerts",
    "Channels are on when configured; a half-configured channel is refused at boot.",
)
RECORDINGS = Section(
    "Recording verification",
    "Only the listed buckets and containers are ever checked. Each SDK keeps its own variables "
    "(`AWS_*`, `AWS_ENDPOINT_URL_S3`, `GOOGLE_APPLICATION_CREDENTIALS`, "
    "`STORAGE_EMULATOR_HOST`).",
)
SPOOL = Section(
    "The spool and the web process",
    "Where the receiver keeps events while Redis cannot take them, and how `web` is run.",
)
METRICS = Section("Metrics")
CONSOLE = Section(
    "Console and read API",
    "No API token: the API answers 404; no password: the pages answer 404.",
)
RETENTION = Section(
    "Retention and erasure",
    "How long content is kept, and how it is encrypted; `beat` purges what is older "
    "([Privacy](privacy.md)).",
)
FORWARDING = Section(
    "Forwarding and hooks",
    "Destinations are named by their variables, `FORWARD_<NAME>_URL` and the rest: see "
    "[Forward destinations](#forward-destinations).",
)


@dataclass(frozen=True)
class Settings:
    """Everything the processes are told by their environment, one field per setting."""

    callback_tokens: tuple[str, ...] = INTAKE.setting(
        "CALLBACK_TOKENS",
        CommaList(),
        (),
        "accepted tokens, comma-separated so one can be rotated in before the old one is "
        "removed; required to serve, at least 16 characters each (`dev` generates one)",
        secret=True,
    )
    tavus_signing_secrets: tuple[str, ...] = INTAKE.setting(
        "TAVUS_SIGNING_SECRETS",
        CommaList(),
        (),
        'secrets of Tavus tools with `auth.type: "hmac"` (post-call actions), comma-separated '
        "for rotation: a request whose `X-Tavus-Signature` verifies needs no token, one whose "
        "signature fails gets 401 (docs/tool-deliveries.md)",
        secret=True,
    )
    max_body_bytes: int = INTAKE.setting(
        "MAX_BODY_BYTES",
        f.Integer(validate=_range(1024)),
        5 * MIB,
        "larger bodies get 413; long transcripts are big",
        shown_default="`5242880` (5 MiB)",
    )
    dedup_ttl_seconds: int = INTAKE.setting(
        "DEDUP_TTL_SECONDS",
        f.Integer(validate=_range(1)),
        7 * 24 * 3600,
        "how long an event key is remembered",
        shown_default="`604800` (7 days)",
    )
    body_timeout_seconds: float = INTAKE.setting(
        "BODY_TIMEOUT_SECONDS",
        f.Float(validate=_range(1)),
        10.0,
        "a request body not received completely by then gets 408; the whole request (headers "
        "too) is cut at twice that, always below gunicorn's `timeout`",
    )
    trusted_proxies: int = INTAKE.setting(
        "TRUSTED_PROXIES",
        f.Integer(validate=_range(0)),
        0,
        "how many proxies in front append to `X-Forwarded-For` (Heroku's router: `1`); the "
        "caller is the entry the outermost of them appended; `0` trusts none",
    )
    allowed_source_cidrs: tuple[str, ...] = INTAKE.setting(
        "ALLOWED_SOURCE_CIDRS",
        CommaList(validate=lambda cidrs: all(map(_is_network, cidrs))),
        (),
        "comma-separated networks allowed to post callbacks; others get 403 and nothing is stored",
        shown_default="— (anyone)",
    )
    dev_mode: bool = INTAKE.setting(
        "TAVUS_CALLBACKS_DEV",
        f.Boolean(),
        False,
        "set by `tavus-callbacks dev`: serve without `CALLBACK_TOKENS`",
    )

    redis_url: str | None = CORE.setting(
        "REDIS_URL",
        f.String(),
        None,
        "broker and dedup store; `rediss://` supported",
        credentials=True,
        shown_default="— (`dev` starts an embedded Redis)",
    )
    # Heroku Redis serves rediss:// with a self-signed certificate, so it is not verified unless
    # asked; the connection is still encrypted.
    redis_tls_verify: bool = CORE.setting(
        "REDIS_TLS_VERIFY",
        f.Boolean(),
        False,
        "verify the `rediss://` certificate (Heroku Redis's is self-signed)",
    )
    # A primary with a replica fails over; Sentinel says which node is the primary now.
    redis_sentinels: tuple[str, ...] = CORE.setting(
        "REDIS_SENTINELS",
        CommaList(validate=lambda nodes: all(map(_is_host_port, nodes))),
        (),
        "comma-separated `host:port` of Redis Sentinels: every process asks them for the "
        "primary of `REDIS_SENTINEL_MASTER` and follows a failover without a restart; "
        "`REDIS_URL`'s password, db and scheme still apply to the primary, its host is not used",
        shown_default="— (`REDIS_URL`'s host is the primary)",
    )
    redis_sentinel_master: str = CORE.setting(
        "REDIS_SENTINEL_MASTER",
        f.String(validate=validate.Length(min=1)),
        "mymaster",
        "the name the sentinels monitor the primary under",
    )
    redis_sentinel_password: str | None = CORE.setting(
        "REDIS_SENTINEL_PASSWORD",
        f.String(),
        None,
        "the sentinels' own password (`requirepass` in sentinel.conf), when they have one",
        secret=True,
        shown_default="—",
    )
    # Replication is asynchronous: an event only the primary holds is lost if it fails over.
    redis_min_replicas: int = CORE.setting(
        "REDIS_MIN_REPLICAS",
        f.Integer(validate=_range(0)),
        0,
        "when 1 or more, a callback is answered `accepted` only once Redis `WAIT` confirms this "
        "many replicas hold it (otherwise it is spooled, answered `spooled`, and drained once "
        "a replica confirms); workers' follow-up tasks wait for the same confirmation",
    )
    redis_replica_timeout_ms: int = CORE.setting(
        "REDIS_REPLICA_TIMEOUT_MS",
        f.Integer(validate=_range(1)),
        100,
        "how long one publish waits for the replicas' confirmation (`WAIT`)",
    )
    database_url: str = CORE.setting(
        "DATABASE_URL",
        DatabaseUrl(),
        "sqlite:///.tavus-callbacks/events.db",
        "the event store; `postgres://…` (Heroku) works as is",
        credentials=True,
    )
    tavus_extensions: tuple[str, ...] = CORE.setting(
        "TAVUS_EXTENSIONS",
        CommaList(),
        (),
        "comma-separated Python modules that add callback kinds, storage providers or alert "
        "channels (see Architecture, Recipes); every process imports them when it starts",
    )
    # Redis hands a message taken but never acked to another worker after this long: it is how
    # long the events a SIGKILLed worker held wait before another worker gets them. Every
    # countdown we schedule stays below half of it (max_countdown_seconds), or a retry held by a
    # worker until its time would be handed out twice.
    visibility_timeout_seconds: int = CORE.setting(
        "VISIBILITY_TIMEOUT_SECONDS",
        f.Integer(validate=_range(5)),
        900,
        "a message a worker took but never acked (the worker was SIGKILLed, ran out of memory, "
        "lost its dyno) goes back to its queue this long after it was taken; every retry and "
        "countdown is kept under half of it",
    )
    max_event_attempts: int = CORE.setting(
        "MAX_EVENT_ATTEMPTS",
        f.Integer(validate=_range(1)),
        8,
        "the bounded attempts of the one retry policy: a task failing this often for a reason "
        "other than the infrastructure is dead-lettered, with one `pipeline_failure` alert; "
        "retries wait 1, 2, 4… s with jitter, below half `VISIBILITY_TIMEOUT_SECONDS` and at "
        "most 300 s",
    )
    # On SIGTERM (REMAP_SIGTERM=SIGQUIT) running tasks get this long before they are cancelled
    # and handed back to Redis; Heroku SIGKILLs 30 s after SIGTERM, so leave room to requeue.
    worker_soft_shutdown_seconds: float = CORE.setting(
        "WORKER_SOFT_SHUTDOWN_SECONDS",
        f.Float(validate=_range(0)),
        15.0,
        "on SIGTERM, running tasks get this long to finish, then are handed back to Redis; keep "
        "it 10 s under the platform's kill delay (Heroku: 30 s)",
    )

    tavus_api_key: str | None = RECONCILIATION.setting(
        "TAVUS_API_KEY",
        f.String(),
        None,
        "lets `beat` pull missed events from the Tavus API; sent only in the `x-api-key` "
        "header, never logged",
        secret=True,
        shown_default="— (reconciliation off)",
    )
    tavus_api_url: str = RECONCILIATION.setting(
        "TAVUS_API_URL", f.Url(require_tld=False), "https://tavusapi.com", "the Tavus API"
    )
    reconcile_interval_seconds: int = RECONCILIATION.setting(
        "RECONCILE_INTERVAL_SECONDS",
        f.Integer(validate=_range(1)),
        300,
        "how often `beat` runs reconciliation",
    )
    reconcile_grace_seconds: int = RECONCILIATION.setting(
        "RECONCILE_GRACE_SECONDS",
        f.Integer(validate=_range(0)),
        600,
        "how long after a conversation ends its transcript, perception analysis and recording "
        "may take before the API is asked",
    )
    reconcile_batch_size: int = RECONCILIATION.setting(
        "RECONCILE_BATCH_SIZE",
        f.Integer(validate=_range(1)),
        20,
        "conversations pulled from the API per run, at most",
    )

    # A Slack URL is its own credential, and the webhook URL may hold one.
    slack_webhook_url: str | None = ALERTS.setting(
        "SLACK_WEBHOOK_URL",
        f.Url(schemes={"https", "http"}, require_tld=False),
        None,
        "Slack incoming-webhook URL; it is a credential, never logged",
        secret=True,
        shown_default="— (channel off)",
    )
    alert_webhook_url: str | None = ALERTS.setting(
        "ALERT_WEBHOOK_URL",
        f.Url(schemes={"https", "http"}, require_tld=False),
        None,
        "where signed alert JSON is POSTed; needs `ALERT_WEBHOOK_SECRET`",
        credentials=True,
        shown_default="— (channel off)",
    )
    alert_webhook_secret: str | None = ALERTS.setting(
        "ALERT_WEBHOOK_SECRET",
        f.String(validate=webhook_secret),
        None,
        "Standard Webhooks secret, `whsec_` + base64 of 24 to 64 random bytes",
        secret=True,
    )
    smtp_host: str | None = ALERTS.setting(
        "SMTP_HOST",
        f.String(),
        None,
        "SMTP server for alert email; needs `ALERT_EMAIL_FROM` and `ALERT_EMAIL_TO`",
        shown_default="— (channel off)",
    )
    smtp_port: int | None = ALERTS.setting(
        "SMTP_PORT",
        f.Integer(validate=_range(1, 65535)),
        None,
        "SMTP port",
        shown_default="by `SMTP_SECURITY`: 587, 465, 25",
    )
    smtp_username: str | None = ALERTS.setting(
        "SMTP_USERNAME", f.String(), None, "SMTP login", shown_default="— (no login)"
    )
    smtp_password: str | None = ALERTS.setting(
        "SMTP_PASSWORD", f.String(), None, "SMTP password, never logged", secret=True
    )
    smtp_security: str = ALERTS.setting(
        "SMTP_SECURITY",
        f.String(validate=validate.OneOf(("starttls", "tls", "none"))),
        "starttls",
        "`starttls`, `tls` (implicit TLS) or `none` (a local sink only; refused with a password)",
    )
    alert_email_from: str | None = ALERTS.setting(
        "ALERT_EMAIL_FROM",
        f.String(validate=_mailbox),
        None,
        "sender, `alerts@example.com` or `Tavus alerts <alerts@example.com>`",
    )
    alert_email_to: tuple[str, ...] = ALERTS.setting(
        "ALERT_EMAIL_TO",
        CommaList(
            validate=validate.And(validate.Length(min=1), lambda boxes: all(map(_mailbox, boxes)))
        ),
        (),
        "recipients, comma-separated",
    )
    alert_routes: tuple[tuple[str, tuple[str, ...]], ...] = ALERTS.setting(
        "ALERT_ROUTES",
        AlertRoutes(),
        DEFAULT_ALERT_ROUTES,
        "which severities go to which channels (the log always); replaces the default whole",
        shown_default="`critical:slack+webhook+email,error:slack+webhook+email,"
        "warning:slack+webhook`",
    )
    alert_on_guardrail: bool = ALERTS.setting(
        "ALERT_ON_GUARDRAIL", f.Boolean(), True, "alert when a guardrail triggers"
    )
    alert_guardrail_severity: str = ALERTS.setting(
        "ALERT_GUARDRAIL_SEVERITY",
        f.String(validate=validate.OneOf(SEVERITIES)),
        "warning",
        "the severity of that alert",
    )
    alert_delivery_attempts: int = ALERTS.setting(
        "ALERT_DELIVERY_ATTEMPTS",
        f.Integer(validate=_range(1, 50)),
        8,
        "tries per channel before a delivery is marked `failed`",
    )
    alert_timeout_seconds: float = ALERTS.setting(
        "ALERT_TIMEOUT_SECONDS",
        f.Float(validate=_range(0.1, 120)),
        10.0,
        "timeout of each HTTP request and SMTP step",
    )
    recording_retention_days: int = ALERTS.setting(
        "RECORDING_RETENTION_DAYS",
        f.Integer(validate=_range(1)),
        30,
        "how long Daily keeps a recording Tavus could not copy: the recovery deadline",
    )

    recording_locations: tuple[str, ...] = RECORDINGS.setting(
        "RECORDING_LOCATIONS",
        CommaList(validate=_recording_locations),
        (),
        "the only buckets / containers a recording is ever checked in: `s3:<bucket>`, "
        "`gcs:<bucket>`, `azure_blob:<account>/<container>`, comma-separated",
        shown_default="— (verification off)",
    )
    recording_wait_seconds: int = RECORDINGS.setting(
        "RECORDING_WAIT_SECONDS",
        f.Integer(validate=_range(0)),
        900,
        "how long a recording may take to appear before it is reported `missing` (and how long "
        "an unreachable endpoint is retried)",
    )
    storage_timeout_seconds: float = RECORDINGS.setting(
        "STORAGE_TIMEOUT_SECONDS",
        f.Float(validate=_range(0.1, 300)),
        10.0,
        "connect and read timeout of every storage SDK call (no SDK-level retries)",
    )
    storage_retry_base_seconds: float = RECORDINGS.setting(
        "STORAGE_RETRY_BASE_SECONDS",
        f.Float(validate=_range(0.1)),
        5.0,
        "first retry delay of a verification; doubles per attempt with jitter, capped at 300 s "
        "and below half `VISIBILITY_TIMEOUT_SECONDS`",
    )
    # The Azure SDK has no variable of its own for this.
    azure_storage_connection_string: str | None = RECORDINGS.setting(
        "AZURE_STORAGE_CONNECTION_STRING",
        f.String(),
        None,
        "Azure credentials (account key or SAS) and endpoint; without it, "
        "`DefaultAzureCredential` (Entra ID)",
        secret=True,
    )

    spool_dir: str = SPOOL.setting(
        "SPOOL_DIR",
        f.String(),
        ".tavus-callbacks/spool",
        "where the receiver keeps events durably (one file each) while Redis cannot take them; "
        "must survive a process restart",
    )
    spool_drain_interval_seconds: float = SPOOL.setting(
        "SPOOL_DRAIN_INTERVAL_SECONDS",
        f.Float(validate=_range(0)),
        5.0,
        "how often each web process looks for spooled events to drain (right away after it "
        "spools one; about once a second while Redis is down); `0`: only `spool drain` drains",
    )
    port: int = SPOOL.setting(
        "PORT", f.Integer(validate=_range(1, 65535)), 5000, "where `web` (and `dev`) listens"
    )
    web_concurrency: int | None = SPOOL.setting(
        "WEB_CONCURRENCY",
        f.Integer(validate=_range(1)),
        None,
        "gunicorn workers per web process (2 x CPU count when Redis is across a network: a sync "
        "worker idles while it waits)",
        shown_default="CPU count",
    )
    log_level: str = SPOOL.setting(
        "LOG_LEVEL",
        f.String(),
        "info",
        "gunicorn's log level",
    )
    log_format: str = SPOOL.setting(
        "LOG_FORMAT",
        f.String(validate=validate.OneOf(("text", "json"))),
        "text",
        "`text`, or `json` for one JSON object per line from web, workers and beat (time, "
        "level, logger, message, event and conversation ids, task, trace id), redacted alike",
    )

    metrics_token: str | None = METRICS.setting(
        "METRICS_TOKEN",
        f.String(validate=validate.Length(min=MIN_TOKEN_LENGTH)),
        None,
        "bearer token a scrape of `/metrics` must send (else 401); compared in constant time, "
        "never exposed",
        secret=True,
        shown_default="— (`/metrics` open)",
    )
    worker_metrics_port: int | None = METRICS.setting(
        "WORKER_METRICS_PORT",
        f.Integer(validate=_range(1, 65535)),
        None,
        "port each worker node serves its metrics on (`GET /metrics`), from its main process",
        shown_default="— (worker metrics not served)",
    )
    worker_task_events: bool = METRICS.setting(
        "WORKER_TASK_EVENTS",
        f.Boolean(),
        False,
        "workers send Celery's task events from their start (celery-exporter needs this); "
        "off, a worker sends none until a monitor asks (`celery control enable_events`, which "
        "Flower does by itself every 5 s): each event is a Redis round trip per task",
    )
    prometheus_multiproc_dir: str | None = METRICS.setting(
        "PROMETHEUS_MULTIPROC_DIR",
        f.String(),
        None,
        "prometheus_client's multiprocess directory for one process type on one host "
        "(gunicorn's workers, or one Celery worker's pool); wiped at its start (`*.db` files "
        "only); never share one between `web` and `worker`",
        shown_default="— (a fresh temporary directory per start)",
    )

    api_tokens: tuple[str, ...] = CONSOLE.setting(
        "API_TOKENS",
        CommaList(validate=_long_enough("API_TOKENS")),
        (),
        "bearer tokens of the read API (`/api/v1`), comma-separated, at least 16 characters "
        "each; `name:token` names one in the audit trail (a bare token is named by its "
        "position, `token-1`...); separate from `CALLBACK_TOKENS`; `dev` generates one",
        secret=True,
        shown_default="— (API off: 404)",
    )
    admin_api_tokens: tuple[str, ...] = CONSOLE.setting(
        "ADMIN_API_TOKENS",
        CommaList(validate=_long_enough("ADMIN_API_TOKENS")),
        (),
        "bearer tokens that may also erase (`DELETE /api/v1/conversations/<id>`...), "
        "comma-separated, at least 16 characters each, `name:token` as `API_TOKENS` (bare: "
        "`admin-1`...); they read as `API_TOKENS` do",
        secret=True,
        shown_default="— (nobody erases through the API)",
    )
    console_password: str | None = CONSOLE.setting(
        "CONSOLE_PASSWORD",
        f.String(),
        None,
        "the password of the console pages (`/console`); `dev` generates one",
        secret=True,
        shown_default="— (console off: 404)",
    )
    console_enabled: bool = CONSOLE.setting(
        "CONSOLE_ENABLED",
        f.Boolean(),
        True,
        "`false`: the `web` process serves the intake alone (no `/api`, no `/console`)",
    )
    secret_key: str | None = CONSOLE.setting(
        "SECRET_KEY",
        f.String(),
        None,
        "salts the key the console's session cookies are signed with (scrypt of "
        "`CONSOLE_PASSWORD` + `SECRET_KEY`); set a long random value in production: without it "
        "a stolen cookie lets the password be guessed offline. Changing either signs everybody "
        "out",
        secret=True,
    )

    retention_days: int = RETENTION.setting(
        "RETENTION_DAYS",
        f.Integer(validate=_range(0)),
        90,
        "a conversation (its events, transcript, perception, objectives, guardrails, "
        "deliveries, alerts), replica, video or document is purged once its newest event is "
        "this many days old and nothing about it is pending; `0` keeps everything",
    )
    audit_retention_days: int = RETENTION.setting(
        "AUDIT_RETENTION_DAYS",
        f.Integer(validate=_range(0)),
        365,
        "how long the audit trail (who replayed, redelivered, erased, purged, signed in) is kept; "
        "`0` keeps it for ever",
    )
    encryption_keys: tuple[str, ...] = RETENTION.setting(
        "ENCRYPTION_KEYS",
        CommaList(validate=_fernet_keys),
        (),
        "Fernet keys, comma-separated: content (raw bodies, transcripts, perception, objective "
        "outputs, post-call action and tool bodies, guardrail and alert texts) is encrypted "
        "with the first in the store, the queued messages and the spool; every key decrypts. "
        "`tavus-callbacks keys generate` prints a new key, `tavus-callbacks rotate-keys` "
        "re-encrypts with the first so that an old key can be removed. Transcript search is "
        "off while it is set",
        secret=True,
        shown_default="— (stored in plain text)",
    )
    purge_interval_seconds: int = RETENTION.setting(
        "PURGE_INTERVAL_SECONDS",
        f.Integer(validate=_range(60)),
        3600,
        "how often `beat` runs the purge",
    )

    # Gathered from every FORWARD_<NAME>_URL (forward_destinations below), not one variable.
    forward_destinations: tuple[ForwardDestination, ...] = field(default=(), repr=False)
    # Whether OTEL_EXPORTER_OTLP_ENDPOINT asks for traces (schemas/tracing.py, docs/tracing.md).
    tracing: bool = field(default=False, repr=False)
    forward_timeout_seconds: float = FORWARDING.setting(
        "FORWARD_TIMEOUT_SECONDS",
        f.Float(validate=_range(0.1, 300)),
        15.0,
        "connect and read timeout of each forwarded request",
    )
    forward_retry_hours: float = FORWARDING.setting(
        "FORWARD_RETRY_HOURS",
        f.Float(validate=_range(0)),
        24.0,
        "how long a destination that is down, slow, throttling or failing with 5xx is retried, "
        "from the first attempt",
    )
    tavus_hooks: tuple[str, ...] = FORWARDING.setting(
        "TAVUS_HOOKS",
        CommaList(),
        (),
        "comma-separated Python modules whose `@on(...)` functions the workers run; a module "
        "that fails to import stops the worker at start",
    )
    hook_max_attempts: int = FORWARDING.setting(
        "HOOK_MAX_ATTEMPTS",
        f.Integer(validate=_range(1, 100)),
        8,
        "runs of a hook that keeps raising before its delivery is `failed`",
    )
    hook_timeout_seconds: float = FORWARDING.setting(
        "HOOK_TIMEOUT_SECONDS",
        f.Float(validate=_range(0.1, 3600)),
        60.0,
        "a hook still running after this long is stopped (and retried, within `HOOK_MAX_ATTEMPTS`)",
    )

    def alert_channels(self, severity: str) -> tuple[str, ...]:
        """Where an alert of ``severity`` goes: its route, and the log always."""
        routed = dict(self.alert_routes).get(severity, ())
        return ("log", *(channel for channel in routed if channel != "log"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``environ`` (``os.environ`` if None): entry points only."""
        source = os.environ if environ is None else environ
        present = {key: value for key, value in source.items() if value != ""}
        try:
            values = _SCHEMA.load(present)
            destinations = forward_destinations(present)
        except ValidationError as exc:
            raise SettingsError(f"invalid environment: {exc.messages}") from exc
        # The OTEL_* variables are the SDK's own: read here once, only to know if it is wanted.
        return cls(**values, forward_destinations=destinations, tracing=tracing.wanted(source))

    @cached_property
    def cipher(self) -> crypto.Cipher | None:
        """``ENCRYPTION_KEYS`` as one cipher, built once per ``Settings`` (never per request);
        None when encryption is off."""
        return crypto.cipher_of(self.encryption_keys)

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
        found: list[str] = []
        for declared, value in declared_values(self):
            if value and declared.secret:
                found += value if isinstance(value, tuple) else (value,)
            elif value and declared.credentials:
                found += url_password(value)
        if self.azure_storage_connection_string:
            found += re.findall(r"AccountKey=([^;]+)", self.azure_storage_connection_string)
        found += [secret for dest in self.forward_destinations for secret in dest.secrets()]
        return tuple(dict.fromkeys(found))


def url_password(url: str) -> list[str]:
    """A URL's password, as written and decoded ([] for none, or for no URL at all)."""
    try:
        password = urlsplit(url).password
    except ValueError:  # an unparsable URL fails later, with a clearer message
        password = None
    return list({password, unquote(password)}) if password else []


def declared_values(settings: Settings) -> Iterable[tuple[Declaration, Any]]:
    """Each declared setting with its value in ``settings``."""
    for fl in DECLARED_FIELDS:
        yield fl.metadata[DECLARED], getattr(settings, fl.name)


class _CrossChecks(Schema):
    """Rules between settings; each setting's own rules are in its declaration."""

    class Meta:
        unknown = EXCLUDE

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


DECLARED_FIELDS = tuple(fl for fl in fields(Settings) if DECLARED in fl.metadata)
_SCHEMA = _CrossChecks.from_dict(
    {fl.name: fl.metadata[DECLARED].parse for fl in DECLARED_FIELDS},
    name="SettingsSchema",
)()


# --- forward destinations: FORWARD_<NAME>_URL, _EVENTS, and their type's own settings ---------

_FORWARD_URL = re.compile(r"^FORWARD_([A-Z0-9][A-Z0-9_]*)_URL$")


@dataclass(frozen=True)
class ForwardDestination:
    """One ``FORWARD_<NAME>_*`` destination as every type has it: where (the URL, whose scheme
    picks the type), which events, and the type's own variables, read by its type."""

    name: str  # <NAME>, lower-cased: "app" for FORWARD_APP_URL
    url: str = field(repr=False)
    events: tuple[str, ...] = ("*",)  # event types, kinds, "prefix.*" patterns or "*"
    # Its other FORWARD_<NAME>_<SUFFIX> variables, by suffix ({"SECRET": "whsec_..."}). Not
    # hashed (a dict cannot be), so that Settings stays a key of the caches that take it.
    variables: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    rate: tuple[int, float] | None = None  # at most (count, per seconds), FORWARD_<NAME>_RATE
    pause_after: int = 20  # failed attempts in a row: FORWARD_<NAME>_PAUSE_AFTER
    probe_seconds: float = 60.0  # FORWARD_<NAME>_PROBE_SECONDS
    order: str | None = None  # "conversation": FORWARD_<NAME>_ORDER

    @property
    def parts(self) -> SplitResult:
        return split_destination_url(self.url)

    @property
    def scheme(self) -> str:
        return self.parts.scheme

    @property
    def host(self) -> str:
        """What logs and errors may name: the host, never the URL (it may hold a token)."""
        return self.parts.hostname or "the destination"

    def variable(self, suffix: str) -> str:
        return f"FORWARD_{self.name.upper()}_{suffix}"

    def secrets(self) -> tuple[str, ...]:
        """The URL's credentials, and every value of the type's own variables: this module
        cannot tell which of them are secret, so it hides them all."""
        found = list(self.variables.values())
        parts = self.parts
        for credential in (parts.password, parts.username):
            if credential:
                found += {credential, unquote(credential)}
        return tuple(found)


@dataclass(frozen=True)
class DestinationSettings:
    """The ``FORWARD_<NAME>_*`` settings of one kind of destination, declared in its module.

    ``schemes`` are the URL schemes that choose the type; ``settings`` its own variables, each
    declared with ``per_destination`` (``SECRET`` for ``FORWARD_<NAME>_SECRET``); ``url``, a
    validator of the rest of ``FORWARD_<NAME>_URL``, when the type asks more than its scheme;
    ``about``, the URL's form and options, for the configuration reference.
    """

    type: str
    schemes: tuple[str, ...]
    settings: tuple[Declaration, ...] = ()
    url: Callable[[str], Any] | None = None
    about: str = ""

    def read(self, destination: ForwardDestination) -> dict[str, Any]:
        """This destination's own settings, parsed or their defaults, by lower-cased suffix.

        A bad or missing one raises SettingsError naming its variable, never its value.
        """
        try:
            self._check_url(destination)
            return self.load(destination.name.upper(), destination.variables)
        except ValidationError as exc:
            raise SettingsError(f"invalid environment: {exc.messages}") from None

    def _check_url(self, destination: ForwardDestination) -> None:
        if self.url is None:
            return
        try:
            self.url(destination.url)
        except ValidationError:  # its message could quote the URL, which may hold a password
            why = f"not a valid {self.type} URL ({', '.join(self.schemes)})"
            raise ValidationError({destination.variable("URL"): [why]}) from None

    @cached_property
    def _schema(self) -> Schema:
        by_suffix = {declared.env.lower(): declared.parse for declared in self.settings}
        return Schema.from_dict(by_suffix, name=f"{self.type}Settings")(unknown=EXCLUDE)

    def load(self, name: str, variables: Mapping[str, str]) -> dict[str, Any]:
        """``variables`` (by suffix) parsed; a ValidationError keyed by full variable names."""
        defaults = {declared.env.lower(): declared.default for declared in self.settings}
        try:
            return defaults | self._schema.load(dict(variables))
        except ValidationError as exc:
            named = {f"FORWARD_{name}_{suffix}": why for suffix, why in exc.messages.items()}
            raise ValidationError(named) from None


# What every destination has, whatever its type.
FORWARD_DESTINATION = DestinationSettings(
    "any",
    (),
    (
        per_destination(
            "URL",
            f.String(required=True, validate=_destination_url),
            None,
            "where to send the events (several `<NAME>`s at once); its scheme picks the "
            "destination type. It may hold credentials: it is never logged or printed, only "
            "its host",
            credentials=True,
        ),
        per_destination(
            "EVENTS",
            CommaList(validate=_event_patterns),
            ("*",),
            "comma-separated filter: conversation event types "
            "(`application.transcription_ready`), kinds (`conversation`, `guardrail`, "
            "`objective`, `replica`, `video`, `document`), prefix patterns (`application.*`) "
            "or `*`",
        ),
        per_destination(
            "RATE",
            Rate(),
            None,
            "at most this many deliveries to it (`10/s`, `600/m`, `3600/h`), counted in Redis "
            "across every worker process on every host; a delivery held back waits, without "
            "using an attempt. Unset: no limit",
        ),
        per_destination(
            "PAUSE_AFTER",
            f.Integer(validate=_range(1)),
            20,
            "pause it after this many failed attempts in a row (or at once on a 410): its "
            "deliveries wait, neither attempted nor failed, one probe is tried every "
            "`FORWARD_<NAME>_PROBE_SECONDS` and the first success resumes it; an alert says each",
        ),
        per_destination(
            "PROBE_SECONDS",
            f.Float(validate=_range(0.1)),
            60.0,
            "while it is paused, how often one delivery is tried as a probe",
        ),
        per_destination(
            "ORDER",
            f.String(validate=validate.OneOf(("conversation",))),
            None,
            "`conversation`: a conversation's events reach it one at a time, in Tavus's order "
            "(`timestamp`, then arrival); a later one waits while an earlier one is pending, and "
            "one that failed for good lets the next go. Unset: as fast as they come",
        ),
    ),
)
_COMMON_SUFFIXES = {d.env for d in FORWARD_DESTINATION.settings}


def forward_destinations(environ: Mapping[str, str]) -> tuple[ForwardDestination, ...]:
    """Every destination the environment names, with what every type has checked here; its
    type reads the rest (``DestinationSettings.read``). Errors name the variable only."""
    names = sorted(m.group(1) for m in map(_FORWARD_URL.match, environ) if m)
    found = []
    for name in names:
        variables = _variables_of(name, names, environ)
        own = {k: v for k, v in variables.items() if k not in _COMMON_SUFFIXES}
        common = FORWARD_DESTINATION.load(name, variables)
        events = common["events"] or ("*",)  # "," says no filter too
        destination = ForwardDestination(
            name.lower(),
            common["url"],
            events,
            own,
            common["rate"],
            pause_after=common["pause_after"],
            probe_seconds=common["probe_seconds"],
            order=common["order"] or None,
        )
        found.append(destination)
    return tuple(found)


def _variables_of(name: str, names: list[str], environ: Mapping[str, str]) -> dict[str, str]:
    """``FORWARD_<name>_*`` by suffix, leaving out those of a longer name (APP_EU for APP)."""
    prefix = f"FORWARD_{name}_"
    longer = tuple(f"FORWARD_{other}_" for other in names if other.startswith(f"{name}_"))
    return {
        key.removeprefix(prefix): value
        for key, value in environ.items()
        if key.startswith(prefix) and not key.startswith(longer)
    }


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
