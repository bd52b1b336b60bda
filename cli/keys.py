"""``tavus-callbacks keys generate|list`` and ``rotate-keys``: encryption at rest
(``ENCRYPTION_KEYS``, ``schemas/crypto.py``, ``workers/keys.py``)."""

from __future__ import annotations

import click

from cli import failures
from cli.lifecycle import cli_actor
from cli.render import echo_table
from schemas import crypto
from schemas.settings import Settings
from workers import keys as rotation
from workers.store import audit
from workers.store.db import Store


@click.group("keys")
def keys() -> None:
    """Keys of ENCRYPTION_KEYS: make one, list those set."""


@keys.command("generate")
def generate() -> None:
    """Print a new Fernet key: put it first in ENCRYPTION_KEYS to encrypt with it."""
    click.echo(crypto.generate_key())


@keys.command("list")
@click.pass_obj
def list_keys(settings: Settings) -> None:
    """The ids of the keys set (8 hex digits of each key's SHA-256), the encrypting one first."""
    if settings.cipher is None:
        click.echo("ENCRYPTION_KEYS is not set: content is stored in plain text")
        return
    ids = settings.cipher.ids
    echo_table(
        ("key id", "use"), [(ids[0], "encrypts, decrypts"), *((i, "decrypts") for i in ids[1:])]
    )


@click.command("rotate-keys")
@click.pass_obj
def rotate_keys(settings: Settings) -> None:
    """Re-encrypt everything stored with the first key of ENCRYPTION_KEYS (content stored in
    plain text before it was set, too), in batches; then the other keys can be removed."""
    if settings.cipher is None:
        raise click.ClickException(
            "ENCRYPTION_KEYS is not set: `tavus-callbacks keys generate` prints a key to set"
        )
    failures.check_store_exists(settings.database_url)
    store = Store(settings.database_url, settings.cipher)
    target = f"key:{settings.cipher.primary}"
    with failures.explained(settings.database_url):
        try:
            rewritten = rotation.rotate(store)
        except crypto.CryptoError as exc:
            audit.record(store, cli_actor(), "rotate-keys", target, "failed", key_id=_id(exc))
            raise click.ClickException(str(exc)) from exc
        audit.record(
            store, cli_actor(), "rotate-keys", target, "done" if rewritten else "nothing",
            rows=rewritten.total(), tables=dict(rewritten),
        )  # fmt: skip
    if not rewritten:
        click.echo(f"everything is already encrypted with key {settings.cipher.primary}")
        return
    click.echo(
        f"re-encrypted {rewritten.total()} rows with key {settings.cipher.primary}; "
        "the other keys of ENCRYPTION_KEYS can be removed"
    )
    echo_table(("table", "rows"), sorted(rewritten.items()))


def _id(exc: crypto.CryptoError) -> str | None:
    return getattr(exc, "key_id", None)


def register(main: click.Group) -> None:
    main.add_command(keys)
    main.add_command(rotate_keys)
