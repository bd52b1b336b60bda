"""Settings come from the environment, once, with clear errors; each is declared once."""

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from click.testing import CliRunner
from marshmallow import fields as marshmallow_fields
from marshmallow import validate

from cli.config import reference_text
from cli.main import main
from schemas.settings import (
    DECLARED,
    DECLARED_FIELDS,
    DestinationSettings,
    Settings,
    SettingsError,
    per_destination,
)
from tests.services import ROOT, base_env


def test_defaults_work_locally() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url is None  # dev starts an embedded Redis
    assert settings.database_url.startswith("sqlite:///")
    assert settings.max_body_bytes == 5 * 1024 * 1024
    assert settings.dedup_ttl_seconds == 7 * 24 * 3600


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "CALLBACK_TOKENS": " new-token-0123456789, old-token-0123456789 ,",
            "REDIS_URL": "rediss://:pw@example.com:6380",
            "DATABASE_URL": "postgres://u:p@db.example.com:5432/d",
            "MAX_BODY_BYTES": "2048",
            "UNRELATED": "ignored",
        }
    )
    assert settings.callback_tokens == ("new-token-0123456789", "old-token-0123456789")
    assert settings.database_url == "postgresql+psycopg://u:p@db.example.com:5432/d"
    assert settings.max_body_bytes == 2048


def test_bad_values_name_the_variable() -> None:
    with pytest.raises(SettingsError, match="MAX_BODY_BYTES"):
        Settings.from_env({"MAX_BODY_BYTES": "lots"})


def test_sentinels_and_replicated_acks_are_parsed_and_checked() -> None:
    settings = Settings.from_env(
        {
            "REDIS_SENTINELS": "10.0.0.5:26379, sentinel-b:26380,",
            "REDIS_SENTINEL_PASSWORD": "sentinel-password-never-logged",
            "REDIS_MIN_REPLICAS": "1",
        }
    )
    assert settings.redis_sentinels == ("10.0.0.5:26379", "sentinel-b:26380")
    assert settings.redis_sentinel_master == "mymaster"
    assert (settings.redis_min_replicas, settings.redis_replica_timeout_ms) == (1, 100)
    assert "sentinel-password-never-logged" in settings.secrets()
    assert "sentinel-password-never-logged" not in repr(settings)
    for bad in ({"REDIS_SENTINELS": "10.0.0.5"}, {"REDIS_SENTINELS": "h:99999"}):
        with pytest.raises(SettingsError, match="REDIS_SENTINELS"):
            Settings.from_env(bad)
    with pytest.raises(SettingsError, match="REDIS_MIN_REPLICAS"):
        Settings.from_env({"REDIS_MIN_REPLICAS": "-1"})


def test_alert_settings_and_routes() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    settings = Settings.from_env(
        {
            "ALERT_ROUTES": "critical:slack+webhook+email, error:slack+webhook, warning:slack",
            "ALERT_WEBHOOK_URL": "https://ops.example.com/hooks/tavus",
            "ALERT_WEBHOOK_SECRET": secret,
            "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
            "SMTP_HOST": "smtp.example.com",
            "SMTP_PASSWORD": "hunter2-smtp",
            "ALERT_EMAIL_FROM": "Tavus alerts <alerts@example.com>",
            "ALERT_EMAIL_TO": "oncall@example.com, recordings@example.com",
            "RECORDING_RETENTION_DAYS": "14",
        }
    )
    assert settings.alert_channels("critical") == ("log", "slack", "webhook", "email")
    assert settings.alert_channels("warning") == ("log", "slack")
    assert settings.alert_channels("info") == ("log",)  # left out: the log only
    assert settings.alert_email_to == ("oncall@example.com", "recordings@example.com")
    assert settings.recording_retention_days == 14
    for secret_value in (secret, "hunter2-smtp", "XXXXXXXX"):
        assert secret_value not in repr(settings)
    defaults = Settings.from_env({})
    assert defaults.alert_channels("error") == ("log", "slack", "webhook", "email")
    assert (defaults.alert_on_guardrail, defaults.alert_guardrail_severity) == (True, "warning")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ALERT_ROUTES": "urgent:slack"}, "ALERT_ROUTES"),
        ({"ALERT_ROUTES": "critical:Pager 9000"}, "ALERT_ROUTES"),  # a channel is checked at start
        ({"ALERT_WEBHOOK_URL": "https://example.com/h"}, "ALERT_WEBHOOK_SECRET"),
        ({"ALERT_WEBHOOK_SECRET": "whsec_c2hvcnQ="}, "ALERT_WEBHOOK_SECRET"),
        ({"ALERT_WEBHOOK_SECRET": "not-a-whsec-secret"}, "ALERT_WEBHOOK_SECRET"),
        ({"SLACK_WEBHOOK_URL": "hooks.slack.com/services"}, "SLACK_WEBHOOK_URL"),
        ({"SMTP_HOST": "smtp.example.com"}, "ALERT_EMAIL_TO"),
        ({"SMTP_SECURITY": "none", "SMTP_PASSWORD": "pw"}, "SMTP_SECURITY"),
        ({"ALERT_GUARDRAIL_SEVERITY": "loud"}, "ALERT_GUARDRAIL_SEVERITY"),
    ],
)
def test_half_configured_alerts_are_refused_at_boot(env: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=named) as caught:
        Settings.from_env(env)
    assert "not-a-whsec-secret" not in str(caught.value)  # a bad secret is not repeated


def test_proxy_and_allowlist_settings() -> None:
    settings = Settings.from_env(
        {"TRUSTED_PROXIES": "1", "ALLOWED_SOURCE_CIDRS": "203.0.113.0/24, 2001:db8::/32"}
    )
    assert settings.trusted_proxies == 1
    assert settings.allowed_source_cidrs == ("203.0.113.0/24", "2001:db8::/32")
    with pytest.raises(SettingsError, match="ALLOWED_SOURCE_CIDRS"):
        Settings.from_env({"ALLOWED_SOURCE_CIDRS": "10.0.0.0/33"})
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        Settings.from_env({"TRUSTED_PROXIES": "-1"})


def test_secrets_are_the_tokens_and_url_passwords() -> None:
    settings = Settings.from_env(
        {
            "CALLBACK_TOKENS": "token-0123456789abcdef",
            "REDIS_URL": "rediss://:p%40ss-word@redis.example.com:6380",
            "DATABASE_URL": "postgres://u:db-password@db.example.com/d",
        }
    )
    assert set(settings.secrets()) == {
        "token-0123456789abcdef", "p%40ss-word", "p@ss-word", "db-password"
    }  # fmt: skip


def test_tavus_signing_secrets_are_a_list_kept_out_of_the_repr_and_logs() -> None:
    settings = Settings.from_env({"TAVUS_SIGNING_SECRETS": " old-secret-1, new-secret-2,"})
    assert settings.tavus_signing_secrets == ("old-secret-1", "new-secret-2")
    assert {"old-secret-1", "new-secret-2"} <= set(settings.secrets())
    assert "old-secret-1" not in repr(settings)
    assert Settings.from_env({}).tavus_signing_secrets == ()


def test_reconciliation_and_shutdown_settings_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "TAVUS_API_KEY": "tk-secret-value",
            "TAVUS_API_URL": "http://127.0.0.1:8080",
            "RECONCILE_INTERVAL_SECONDS": "30",
            "RECONCILE_GRACE_SECONDS": "0",
            "RECONCILE_BATCH_SIZE": "5",
            "WORKER_SOFT_SHUTDOWN_SECONDS": "20",
            "VISIBILITY_TIMEOUT_SECONDS": "600",
        }
    )
    assert settings.tavus_api_url == "http://127.0.0.1:8080"
    assert (settings.reconcile_interval_seconds, settings.reconcile_grace_seconds) == (30, 0)
    assert (settings.reconcile_batch_size, settings.worker_soft_shutdown_seconds) == (5, 20.0)
    assert settings.max_countdown_seconds == 300  # every countdown stays below the timeout
    assert "tk-secret-value" not in repr(settings)  # printing the settings cannot leak the key


def test_reconciliation_is_off_without_a_key() -> None:
    settings = Settings.from_env({})
    assert settings.tavus_api_key is None
    assert settings.tavus_api_url == "https://tavusapi.com"
    with pytest.raises(SettingsError, match="TAVUS_API_URL"):
        Settings.from_env({"TAVUS_API_URL": "not a url"})


def test_each_setting_is_declared_once_with_a_variable_of_its_own() -> None:
    declared = [fl.metadata[DECLARED] for fl in DECLARED_FIELDS]
    variables = [d.env for d in declared]
    assert len(variables) == len(set(variables)) >= 54
    # Every field but the gathered destinations and OTEL_* (the SDK's own variables) is one
    # declared variable, documented.
    assert {fl.name for fl in fields(Settings)} - {fl.name for fl in DECLARED_FIELDS} == {
        "forward_destinations",
        "tracing",
    }
    assert all(d.doc and d.section for d in declared)
    assert Settings.from_env({}) == Settings()  # the declared defaults are the dataclass's


def test_the_configuration_reference_is_what_the_declarations_say() -> None:
    """docs/configuration.md is generated (`tavus-callbacks config docs`); edits go to the
    declarations, and this fails until the page is generated again."""
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == reference_text(), "run: tavus-callbacks config docs"
    for variable in ("CALLBACK_TOKENS", "FORWARD_<NAME>_SECRET", "CELERY_WORKER_CONCURRENCY"):
        assert f"| `{variable}` |" in committed


def test_the_reference_command_checks_the_committed_page(tmp_path: Path) -> None:
    runner = CliRunner()
    stale = tmp_path / "configuration.md"
    stale.write_text("# Configuration\n", encoding="utf-8")
    # It runs whatever the environment holds: a bad value is no reason to refuse the docs.
    env = {"MAX_BODY_BYTES": "lots"}
    checked = runner.invoke(main, ["config", "docs", "--check", "--output", str(stale)], env=env)
    assert checked.exit_code == 1 and "out of date" in checked.output
    written = runner.invoke(main, ["config", "docs", "--output", str(stale)], env=env)
    assert written.exit_code == 0 and stale.read_text(encoding="utf-8") == reference_text()


def test_config_check_names_what_is_wrong_and_never_the_value() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    env = {"FORWARD_APP_URL": "https://app.example.com/tavus", "FORWARD_APP_SECRET": secret}
    runner = CliRunner()
    good = runner.invoke(main, ["config", "check"], env=env)
    assert good.exit_code == 0 and "forward destinations: app" in good.output
    for broken, variable in [
        ({"FORWARD_APP_SECRET": "whsec_c2hvcnQ="}, "FORWARD_APP_SECRET"),  # the webhook type's
        ({"FORWARD_APP_URL": "ftp://app.example.com/"}, "FORWARD_APP_URL"),  # no type takes it
        ({"MAX_BODY_BYTES": "lots"}, "MAX_BODY_BYTES"),
    ]:
        bad = runner.invoke(main, ["config", "check"], env={**env, **broken})
        assert bad.exit_code == 1 and variable in bad.output
        assert "c2hvcnQ" not in bad.output and secret not in bad.output


def test_importing_the_entry_modules_reads_no_environment() -> None:
    """Settings are read by an entry point's one call: the Celery app is built when `celery -A`
    asks for it, not when its module is imported."""
    env = base_env(MAX_BODY_BYTES="lots")  # any read of the environment would fail on it
    imports = "import workers.celery_app, bench.noop, deploy.wsgi, schemas.redaction, cli.main"
    done = subprocess.run([sys.executable, "-c", imports], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    asked = "from workers.celery_app import celery"
    done = subprocess.run([sys.executable, "-c", asked], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "MAX_BODY_BYTES" in done.stderr


# A destination type of a test module: its own FORWARD_<NAME>_* settings, declared here.
TOY = DestinationSettings(
    "toy",
    ("toy",),
    (
        per_destination("QUEUE", marshmallow_fields.String(required=True), None, "its queue"),
        per_destination(
            "BATCH",
            marshmallow_fields.Integer(validate=validate.Range(min=1)),
            10,
            "events per message",
        ),
    ),
)


def test_a_destination_type_reads_its_own_settings() -> None:
    env = {
        "FORWARD_JOBS_URL": "toy://user:t0ken-secret@queue.example.com/",
        "FORWARD_JOBS_QUEUE": "tavus-events",
        "FORWARD_JOBS_EU_URL": "toy://eu.example.com/",  # another destination, not JOBS's
        "FORWARD_JOBS_EU_QUEUE": "eu-events",
        "FORWARD_JOBS_EU_BATCH": "5",
    }
    jobs, jobs_eu = Settings.from_env(env).forward_destinations
    assert (jobs.name, jobs.scheme, jobs.events, jobs_eu.name) == ("jobs", "toy", ("*",), "jobs_eu")
    assert TOY.read(jobs) == {"queue": "tavus-events", "batch": 10}  # the declared default
    assert TOY.read(jobs_eu) == {"queue": "eu-events", "batch": 5}
    assert {"t0ken-secret", "tavus-events"} <= set(Settings.from_env(env).secrets())
    with pytest.raises(SettingsError, match="FORWARD_JOBS_QUEUE"):
        TOY.read(Settings.from_env({**env, "FORWARD_JOBS_QUEUE": ""}).forward_destinations[0])
    with pytest.raises(SettingsError, match="FORWARD_JOBS_EU_BATCH"):
        TOY.read(Settings.from_env({**env, "FORWARD_JOBS_EU_BATCH": "0"}).forward_destinations[1])
    with pytest.raises(SettingsError, match="FORWARD_JOBS_URL"):
        Settings.from_env({**env, "FORWARD_JOBS_URL": "no scheme here"})
