"""What a web worker (``deploy.wsgi:app``) holds: the console, SQLAlchemy and Alembic come only
when something needs them (issue 23: a worker serving callbacks alone held ~35 MiB of them).

Each probe runs in a fresh interpreter, so ``sys.modules`` is the worker's own, built from the
settings as gunicorn's workers build it, over a real Redis and a real SQLite store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.console_fixtures import API_TOKEN, env_for
from tests.helpers import FIXTURES, TOKEN
from tests.services import ROOT
from workers.store.db import Store

pytestmark = pytest.mark.integration

PROBE = """
import json, sys
from pathlib import Path

from deploy import wsgi
from werkzeug.test import Client

HEAVY = ("sqlalchemy", "alembic", "console.app", "console.api", "console.pages")
body = Path(sys.argv[1]).read_bytes()
client = Client(wsgi.app)
seen = {}

def loaded():
    return sorted(name for name in HEAVY if name in sys.modules)

seen["built"] = loaded()
for n in range(3):
    one = body.replace(b'"c123456"', f'"c-import-{n}"'.encode())
    reply = client.post(f"/callbacks/{sys.argv[2]}", data=one, content_type="application/json")
    assert reply.status_code == 202, reply.get_data(as_text=True)
seen["callbacks"] = loaded()
reply = client.get("/metrics")
assert reply.status_code == 200 and b'tavus_callbacks_source_up{source="store"} 1.0' in reply.data
seen["metrics"] = loaded()
reply = client.get("/api/v1/events", headers={"Authorization": f"Bearer {sys.argv[3]}"})
assert reply.status_code == 200, reply.get_data(as_text=True)
seen["api"] = loaded()
print(json.dumps(seen))
"""


def probe(env: dict[str, str]) -> dict[str, list[str]]:
    body = FIXTURES / "pal_joined.json"
    argv = [sys.executable, "-c", PROBE, str(body), TOKEN, API_TOKEN]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_web_worker_loads_the_store_and_the_console_on_first_use(
    redis_url: str, sqlite_url: str, tmp_path: Path
) -> None:
    Store(sqlite_url).upgrade()
    seen = probe(env_for(redis_url, sqlite_url))
    assert seen["built"] == [] and seen["callbacks"] == []  # the intake needs none of them
    assert seen["metrics"] == ["sqlalchemy"]  # the store's gauges, read at the first scrape
    assert "console.api" in seen["api"] and "alembic" not in seen["api"]
