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
