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
