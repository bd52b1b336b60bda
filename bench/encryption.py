"""What ``ENCRYPTION_KEYS`` costs the intake, in CPU per request: ``python -m bench.encryption``.

The full benchmark (``tavus-callbacks bench``) measures the encrypted intake beside the plain
one under gunicorn and ``wrk``, in the same turns; on a machine shared with other work its
throughput swings more than the difference it looks for. This measures the receiver's own CPU
(``time.process_time``: neither ``redis-server``'s nor anyone else's) for the same requests,
through the WSGI app (token, parse, classify, seal, claim-and-push to a private Redis), plain and
encrypted alternating request by request, and keeps each side's median round: the load of the
machine weighs on both alike.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis

from receiver import create_app
from schemas.crypto import generate_key
from schemas.settings import Settings

from . import payloads, services


def _bodies(mix: str, turns: int, count: int) -> list[bytes]:
    """``count`` bodies of ``mix``, each of a new conversation (so a new idempotency key)."""
    templates = payloads.templates(turns, mix)
    return [
        payloads.render(templates[i % len(templates)], f"c-{uuid.uuid4().hex}", time.time())
        for i in range(count)
    ]


def measure(
    redis_url: str, mix: str, turns: int, requests: int, rounds: int
) -> dict[str, list[float]]:
    """Microseconds of CPU per request, per turn, for each app."""
    token = secrets.token_urlsafe(24)
    spool = tempfile.mkdtemp(prefix="bench-spool-")
    common = {"callback_tokens": (token,), "redis_url": redis_url, "spool_dir": spool}
    apps = {
        "plain": create_app(Settings(**common)).test_client(),
        "encrypted": create_app(
            Settings(**common, encryption_keys=(generate_key(),))
        ).test_client(),
    }
    client = redis.Redis.from_url(redis_url)
    url = f"/callbacks/{token}"
    costs: dict[str, list[float]] = {name: [] for name in apps}
    for turn in range(rounds):
        # Request by request, the two apps alternate (who goes first alternates too), so that
        # whatever else the machine does weighs on both alike.
        spent = dict.fromkeys(apps, 0.0)
        for index, body in enumerate(_bodies(mix, turns, 2 * requests)):
            name = ("plain", "encrypted")[(index + turn) % 2]
            started = time.process_time()
            answer = apps[name].post(url, data=body, content_type="application/json")
            spent[name] += time.process_time() - started
            if answer.status_code != 202 or answer.json["status"] != "accepted":
                raise RuntimeError(f"{name}: {answer.status_code} {answer.get_data()!r}")
        for name in apps:
            costs[name].append(1e6 * spent[name] / requests)
        client.flushall()
    client.close()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="per turn")
    parser.add_argument("--rounds", type=int, default=10, help="turns per app")
    parser.add_argument("--turns", type=int, default=payloads.DEFAULT_TURNS, help="transcript")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-encryption-"))
    server, url = services.redis_server(work, work / "redis.log")
    try:
        print(
            "| load | mean body (bytes) | plain (µs CPU/request) | encrypted | encrypted / plain |"
        )
        print("| --- | --- | --- | --- | --- |")
        for mix in payloads.MIXES:
            sizes = [len(b) for b in _bodies(mix, args.turns, 50)]
            costs = measure(url, mix, args.turns, args.requests, args.rounds)
            plain, sealed = (statistics.median(costs[name]) for name in ("plain", "encrypted"))
            print(
                f"| {mix} | {sum(sizes) // len(sizes):,} | {plain:.0f} | {sealed:.0f} | "
                f"{sealed / plain:.3f} |"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
