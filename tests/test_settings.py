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
