"""Settings come from the environment, once, with clear errors."""

import pytest

from schemas.settings import Settings, SettingsError


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
        ({"ALERT_ROUTES": "critical:pager"}, "ALERT_ROUTES"),
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
