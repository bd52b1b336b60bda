"""`tavus-callbacks replay`: what it tells the user when there is nothing, or no way, to replay.
(Replaying a dead-lettered event through a real worker is a case of tests/test_faults.py.)"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from tests.services import ROOT, base_env, free_port
from workers.store.db import Store
from workers.store.models import Event, EventStatus


def replay(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cli.main", "replay", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def failed_event(store: Store) -> None:
    with store.session() as session:
        session.add(
            Event(
                id="e-failed",
                event_key="k-failed",
                kind="conversation",
                event_type="application.transcription_ready",
                conversation_id="c1",
                received_at=datetime.now(UTC),
                body="{}",
                status=EventStatus.FAILED,
                attempts=8,
                last_error="IntegrityError: refused",
            )
        )


def test_replay_says_what_it_needs_and_what_it_found(sqlite_url: str, redis_url: str) -> None:
    Store(sqlite_url).upgrade()
    env = base_env(DATABASE_URL=sqlite_url, REDIS_URL=redis_url)
    neither = replay(env=env)
    assert neither.returncode == 2 and "give one EVENT_ID or --failed" in neither.stderr
    both = replay("e1", "--failed", env=env)
    assert both.returncode == 2
    unknown = replay("e-unknown", env=env)
    assert unknown.returncode == 1 and "no event e-unknown" in unknown.stderr
    nothing = replay("--failed", env=env)
    assert (nothing.returncode, nothing.stdout) == (0, "no failed events to replay\n")


def test_without_redis_nothing_is_changed(sqlite_url: str, tmp_path: Path) -> None:
    store = Store(sqlite_url)
    store.upgrade()
    failed_event(store)
    env = base_env(DATABASE_URL=sqlite_url, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    result = replay("--failed", env=env)
    assert result.returncode == 1 and "is unreachable" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
    with store.session() as session:
        event = session.get(Event, "e-failed")
        assert (event.status, event.attempts) == (EventStatus.FAILED, 8)
