"""The CLI as a user runs it: `dev` serves the whole pipeline, `simulate` feeds it, the
inspection commands read what it stored."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from cli.services import port_taken
from tests.services import base_env, wait_until

pytestmark = pytest.mark.integration

RECORD_KEYS = {
    "conversation_id", "replica_id", "status", "shutdown_reason", "transcript",
    "perception_analysis", "recording", "objectives", "guardrails", "events",
}  # fmt: skip


def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli.main", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_dev_serves_and_simulate_produces_complete_records(dev_server) -> None:
    url, cwd, env = dev_server["url"], dev_server["cwd"], dev_server["env"]
    assert url.startswith(f"http://127.0.0.1:{env['PORT']}/callbacks/")
    simulated = cli("simulate", "--url", url, "--repeat", "2", cwd=cwd, env=env)
    assert simulated.returncode == 0, simulated.stderr
    posted = [line.split() for line in simulated.stdout.splitlines() if line[:3].isdigit()]
    statuses = [words[1] for words in posted]
    assert statuses.count("accepted") == statuses.count("duplicate") == 17
    # Then the conversation ids, and the command to look at one.
    assert "tavus-callbacks conversation ID" in simulated.stdout

    def all_processed():
        listed = cli("events", "--json", "--limit", "100", cwd=cwd, env=env)
        rows = json.loads(listed.stdout)
        return rows if len(rows) == 17 and {r["status"] for r in rows} == {"processed"} else None

    rows = wait_until(all_processed, timeout=20)
    conversation_id = next(
        r["conversation_id"] for r in rows if r["event_type"] == "system.shutdown"
    )
    shown = cli("conversation", conversation_id, "--json", cwd=cwd, env=env)
    record = json.loads(shown.stdout)
    assert set(record) >= RECORD_KEYS
    assert record["status"] == "ended"
    assert record["transcript"] and record["perception_analysis"] and record["recording"]["uri"]
    assert record["objectives"] and record["guardrails"]
    text = cli("conversation", conversation_id, cwd=cwd, env=env).stdout
    assert f"conversation {conversation_id}: ended" in text

    assert f"  {conversation_id}" in simulated.stdout
    # simulate prints "202 accepted video v1234 error": each resource has its record.
    for kind in ("replica", "video", "document"):
        sent = {(p[3], p[4]) for p in posted if p[2] == kind}  # (id, status)
        latest = {}
        for resource_id, _ in sent:
            shown = json.loads(cli(kind, resource_id, "--json", cwd=cwd, env=env).stdout)
            latest[resource_id] = shown["status"]
        assert set(latest.values()) == ({"ready"} if kind == "document" else {"ready", "error"})


def test_events_filters_and_unknown_conversation(dev_server) -> None:
    cwd, env = dev_server["cwd"], dev_server["env"]
    cli("simulate", "--url", dev_server["url"], "--scenario", "replica", cwd=cwd, env=env)
    wait_until(lambda: len(json.loads(cli("events", "--json", cwd=cwd, env=env).stdout)) == 2)
    only = json.loads(cli("events", "--json", "--kind", "video", cwd=cwd, env=env).stdout)
    assert only == []
    missing = cli("conversation", "c-none", cwd=cwd, env=env)
    assert missing.returncode == 1 and "no events for conversation c-none" in missing.stderr


def test_db_upgrade_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    env = base_env(DATABASE_URL=postgres_url)
    result = cli("db", "upgrade", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
    assert cli("events", "--json", cwd=tmp_path, env=env).stdout.strip() == "[]"


def test_a_second_terminal_under_the_folder_uses_the_running_dev(dev_server) -> None:
    """No REDIS_URL, no DATABASE_URL, no --url: every command finds dev from a subfolder."""
    cwd, env = dev_server["cwd"], dev_server["env"]
    assert "REDIS_URL" not in env and "DATABASE_URL" not in env
    deeper = cwd / "src" / "app"
    deeper.mkdir(parents=True)
    posted = cli("simulate", "--scenario", "replica", cwd=deeper, env=env)
    assert posted.returncode == 0, posted.stderr
    listed = wait_until(
        lambda: (
            (rows := json.loads(cli("events", "--json", cwd=deeper, env=env).stdout))
            and len(rows) == 2
            and rows
        ),
        timeout=30,
    )
    assert {row["resource_id"] for row in listed} == {
        words[3] for line in posted.stdout.splitlines() if (words := line.split())[:1] == ["202"]
    }
    table = cli("events", cwd=deeper, env=env).stdout.splitlines()
    assert table[0].split() == ["RECEIVED", "STATUS", "KIND", "TYPE", "RESOURCE", "EVENT", "ID"]
    replayed = cli("replay", "--failed", cwd=deeper, env=env)
    assert replayed.returncode == 0 and "no failed events" in replayed.stdout
    assert not (deeper / ".tavus-callbacks").exists()  # nothing made where it was run


def test_sighup_to_dev_stops_every_process_and_frees_the_port(dev_server) -> None:
    """Closing the terminal: dev, gunicorn, the Celery worker and the embedded Redis all end."""
    process, port = dev_server["process"], int(dev_server["env"]["PORT"])
    started = psutil.Process(process.pid).children(recursive=True)
    names = " ".join(" ".join(child.cmdline()) for child in started)
    assert "gunicorn" in names and "celery" in names and "redis-server" in names
    os.killpg(process.pid, signal.SIGHUP)
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(started, timeout=15)
    assert not alive, [child.cmdline() for child in alive]
    assert not port_taken(port)
    assert not (dev_server["cwd"] / ".tavus-callbacks" / "dev.json").exists()


def test_a_folder_with_no_store_gets_one_line_and_no_new_file(tmp_path: Path) -> None:
    env = {k: v for k, v in base_env().items() if k not in ("REDIS_URL", "DATABASE_URL")}
    for args in (("events",), ("conversation", "c-1"), ("alerts",)):
        result = cli(*args, cwd=tmp_path, env=env)
        assert result.returncode == 1, args
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        assert "no store" in result.stderr
    assert not (tmp_path / ".tavus-callbacks").exists()


def test_dev_says_first_when_its_port_is_taken(tmp_path: Path) -> None:
    env = {k: v for k, v in base_env().items() if k not in ("REDIS_URL", "DATABASE_URL")}
    with socket_listening() as port:
        env["PORT"] = str(port)
        result = subprocess.run(
            [sys.executable, "-m", "cli.main", "dev"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode != 0
    first = result.stdout.strip().splitlines()[:1] + result.stderr.strip().splitlines()[:1]
    assert any(f"port {port} is already in use" in line and "--port" in line for line in first)
    assert "Callback URL" not in result.stdout


@contextlib.contextmanager
def socket_listening():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]
