"""``tavus-callbacks dev``: the whole pipeline on one machine, as a local service.

Web (gunicorn) and worker (celery) run as the Procfile runs them, under honcho; Redis is a
private ``redis-server`` unless ``REDIS_URL`` is set, and the store is a SQLite file in
``.tavus-callbacks/`` of the folder it runs in unless ``DATABASE_URL`` is set. Where they are is
written to ``.tavus-callbacks/dev.json`` for the other terminals (``cli/devstate.py``) and
removed on exit. SIGINT, SIGTERM and SIGHUP (the terminal closed) all stop every process.
"""

from __future__ import annotations

import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from honcho.manager import Manager

from cli import devstate, failures
from cli.services import (
    die_with_parent,
    free_port,
    listening,
    port_taken,
    redis_server_command,
    worker_command,
)
from schemas.settings import Settings, SettingsError, named_token
from workers.store.db import Store

ROOT = Path(__file__).resolve().parents[1]
GUNICORN_CONFIG = ROOT / "deploy" / "gunicorn.conf.py"
REDIS_START_SECONDS = 10
REDIS_STOP_SECONDS = 5


def run(port: int, concurrency: int, folder: Path | None = None) -> int:
    """Serve until a signal; the exit code of the first process that stopped."""
    folder = (folder or Path.cwd()).resolve()
    data_dir = devstate.data_dir(folder)
    if port_taken(port):  # before anything else: the URL we would print would be another's
        raise click.ClickException(
            f"port {port} is already in use (another dev or server?): "
            f"choose another with --port N or PORT=N"
        )
    running = devstate.read_state(data_dir)
    if running:
        raise click.ClickException(
            f"a dev is already running in {folder} (pid {running['pid']}, "
            f"{running.get('callback_url', '?')}): stop it first, or run one in another folder"
        )
    env = dict(os.environ)
    env.setdefault("CALLBACK_TOKENS", secrets.token_urlsafe(24))
    # The console and its API, served beside the intake (deploy.wsgi:app).
    env.setdefault("CONSOLE_PASSWORD", secrets.token_urlsafe(12))
    env.setdefault("API_TOKENS", secrets.token_urlsafe(24))
    env.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
    env["TAVUS_CALLBACKS_DEV"] = "1"
    env["DATABASE_URL"] = env.get("DATABASE_URL") or devstate.sqlite_url(data_dir)
    env["SPOOL_DIR"] = str(Path(env.get("SPOOL_DIR") or data_dir / "spool").resolve())
    with embedded_redis(env, data_dir):
        settings = _settings(env)
        with failures.explained(settings.database_url):
            Store(settings.database_url, settings.cipher).upgrade()
        callback_url = f"http://127.0.0.1:{port}/callbacks/{settings.callback_tokens[0]}"
        state = {
            "pid": os.getpid(),
            "folder": str(folder),
            "callback_url": callback_url,
            "redis_url": settings.redis_url,
            "database_url": settings.database_url,
            "spool_dir": env["SPOOL_DIR"],
            "port": port,
        }
        devstate.write_state(data_dir, state)
        try:
            _announce(state, data_dir, settings)
            return _serve(port, concurrency, env, data_dir, beat=bool(settings.tavus_api_key))
        finally:
            devstate.remove_state(data_dir, os.getpid())


def _settings(env: dict[str, str]) -> Settings:
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def embedded_redis(env: dict[str, str], data_dir: Path) -> Iterator[None]:
    """A private redis-server (its append-only file in ``data_dir``) unless REDIS_URL is set;
    stopped when the block ends, and by the kernel if this process dies first."""
    if env.get("REDIS_URL"):
        yield
        return
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = subprocess.Popen(
        redis_server_command(port, str(data_dir)),
        stdout=(data_dir / "redis.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C is for dev: Redis stops last, after the worker
        preexec_fn=die_with_parent,  # no threads yet, so safe before exec
    )
    try:
        deadline = time.monotonic() + REDIS_START_SECONDS
        while not listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise click.ClickException(
                    f"the embedded redis-server did not start: see {data_dir / 'redis.log'}"
                )
            time.sleep(0.05)
        env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
        yield
    finally:
        server.terminate()
        try:
            server.wait(timeout=REDIS_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _announce(state: dict[str, object], data_dir: Path, settings: Settings) -> None:
    port = state["port"]
    click.echo(f"Redis:        {failures.shown(str(state['redis_url']))}")
    click.echo(f"Store:        {failures.shown(str(state['database_url']))}")
    click.echo(f"Callback URL: {state['callback_url']}")
    if settings.console_enabled:
        click.echo(
            f"Console:      http://127.0.0.1:{port}/console/  password: {settings.console_password}"
        )
        _, token = named_token(settings.api_tokens[0])
        click.echo(f"API:          http://127.0.0.1:{port}/api/v1/  token: {token}")
    click.echo(f"State:        {data_dir / devstate.STATE_FILE_NAME} (for other terminals)")
    click.echo("Try, in another terminal under this folder:")
    click.echo("  tavus-callbacks simulate")
    click.echo("  tavus-callbacks events")


def process_commands(
    port: int, concurrency: int, data_dir: Path, beat: bool = False
) -> dict[str, str]:
    """The Procfile's processes, as honcho runs them (shell command lines)."""
    python = sys.executable
    web = [
        python, "-m", "gunicorn", "-c", str(GUNICORN_CONFIG), "--pythonpath", str(ROOT),
        "--bind", f"127.0.0.1:{port}", "deploy.wsgi:app",
    ]  # fmt: skip
    commands = {"web": web, "worker": worker_command(concurrency=concurrency, name="dev")}
    if beat:  # reconciliation with the Tavus API, the one periodic task so far
        commands["beat"] = [
            python, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO",
            "--schedule", str(data_dir / "celerybeat-schedule"),
        ]  # fmt: skip
    return {name: shlex.join(command) for name, command in commands.items()}


def _serve(port: int, concurrency: int, env: dict[str, str], data_dir: Path, beat: bool) -> int:
    """Run the processes under honcho until one stops or a signal comes.

    honcho stops everything on SIGINT and SIGTERM (SIGTERM to each process group, SIGKILL 5 s
    after the first one exits) but not on SIGHUP, which a closed terminal sends: SIGHUP does the
    same here. Honcho's helper processes are forks of this one and inherit the handler, so it
    acts in this process only.
    """
    manager = Manager()
    for name, command in process_commands(port, concurrency, data_dir, beat=beat).items():
        manager.add_process(name, command, env=env)
    me = os.getpid()

    def hang_up(signum: int, frame: object) -> None:
        if os.getpid() != me:  # a honcho helper: its process stops when its child does
            return
        manager._system_print("SIGHUP received\n")  # honcho says the same for INT and TERM
        manager.returncode = 128 + signal.SIGHUP
        manager.terminate()

    previous = signal.signal(signal.SIGHUP, hang_up)
    try:
        manager.loop()
    finally:
        signal.signal(signal.SIGHUP, previous)
    return manager.returncode or 0
