"""What goes wrong between the CLI and its services, said in one line with what to do.

A missing store, an unmigrated one, an unreachable Redis or database, a URL that is no URL: each
becomes a ``click.ClickException`` (one line on stderr, exit 1), never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import click

REDIS_SCHEMES = ("redis", "rediss", "unix")
START_DEV = "start `tavus-callbacks dev` in the project folder, or set"


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite URL (None: another database, or an in-memory one)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def shown(url: str) -> str:
    """A URL as it may be printed: its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses (a Redis one may not be): drop credentials
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


def check_store_exists(database_url: str) -> None:
    """Refuse to read a SQLite store that is not there (opening it would create an empty one)."""
    try:
        path = sqlite_file(database_url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError: not a database URL
        raise click.ClickException(f"DATABASE_URL is not a database URL: {exc}") from exc
    if path is not None and not path.exists():
        raise click.ClickException(
            f"no store at {path}: {START_DEV} DATABASE_URL to an existing store"
        )


def check_redis_url(redis_url: str | None) -> str:
    if not redis_url:
        raise click.ClickException(f"no Redis to talk to: {START_DEV} REDIS_URL")
    if urlsplit(redis_url).scheme not in REDIS_SCHEMES:
        raise click.ClickException(
            f"REDIS_URL is not a Redis URL ({shown(redis_url)}): use redis://host:port/0"
        )
    return redis_url


@contextmanager
def explained(database_url: str, redis_url: str | None = None) -> Iterator[None]:
    """Turn the failures of a store or of Redis inside the block into one clear line."""
    try:
        yield
    except click.ClickException:
        raise
    except Exception as exc:
        line = explain(exc, database_url, redis_url)
        if line is None:
            raise
        raise click.ClickException(line) from exc


def explain(exc: Exception, database_url: str, redis_url: str | None) -> str | None:
    """The one line for ``exc``, or None if it is none of the failures this module knows."""
    import redis.exceptions
    import sqlalchemy.exc

    from schemas.crypto import CryptoError
    from workers.store.search import SearchOff

    if isinstance(exc, SearchOff):
        return str(exc)
    cause = getattr(exc, "orig", None)  # SQLAlchemy wraps what a column's type raised
    if isinstance(exc, CryptoError) or isinstance(cause, CryptoError):
        return str(exc if isinstance(exc, CryptoError) else cause)
    if isinstance(exc, sqlalchemy.exc.OperationalError | sqlalchemy.exc.ProgrammingError):
        reason = _first_line(exc.orig) if exc.orig is not None else _first_line(exc)
        if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
            return (
                f"the store at {shown(database_url)} has no tables yet: "
                "run `tavus-callbacks db upgrade` (dev does it for you)"
            )
        return f"cannot use the store at {shown(database_url)}: {reason}; check DATABASE_URL"
    if isinstance(exc, sqlalchemy.exc.ArgumentError):
        return f"DATABASE_URL is not a database URL SQLAlchemy can open: {_first_line(exc)}"
    if isinstance(exc, redis.exceptions.ConnectionError | ConnectionError):
        where = shown(redis_url) if redis_url else "REDIS_URL"
        return f"Redis at {where} is unreachable ({_first_line(exc)}): {START_DEV} REDIS_URL"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
