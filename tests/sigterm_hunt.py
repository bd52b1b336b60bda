"""Hunt for a worker that outlives Heroku's 30 s after SIGTERM.

    python -m tests.sigterm_hunt --runs 300 --minutes 40 --out /tmp/sigterm-hunt

Starts a real Celery worker as the Procfile does (REMAP_SIGTERM=SIGQUIT, every queue) on a
private Redis with AOF, keeps it busy with conversations posted through the receiver, and sends
SIGTERM to every process of its group (as Heroku does) at a random moment, again and again. A run
whose main process has not exited 30 s later gets every process's thread stacks written to the
output folder (py-spy when it is on the PATH or given with --py-spy, else the worker's own
SIGUSR1 dump), then SIGKILL. Prints how long each run took to exit and a summary at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import psutil

from cli.simulate import conversation_lifecycle
from receiver import create_app
from schemas.messages import QUEUES
from schemas.settings import Settings
from tests.helpers import TOKEN
from tests.services import RedisServer, Worker, base_env
from workers.store.db import Store

HEROKU_KILL_AFTER = 30.0


class Poster:
    """Posts whole conversations through the receiver (in process) until stopped."""

    def __init__(self, settings: Settings, rate: float) -> None:
        self.client = create_app(settings).test_client()
        self.rate = rate
        self.stop = threading.Event()
        self.sent = 0

    def run(self) -> None:
        number = 0
        while not self.stop.is_set():
            for body in conversation_lifecycle(f"c-hunt-{os.getpid()}-{number:06d}"):
                answer = self.client.post(
                    f"/callbacks/{TOKEN}", data=orjson.dumps(body), content_type="application/json"
                )
                assert answer.status_code in (200, 202), answer.text
                self.sent += 1
                time.sleep(1 / self.rate)
            number += 1


def stacks(worker: Worker, py_spy: str | None) -> str:
    """Every process's thread stacks, as text."""
    main = psutil.Process(worker.process.pid)
    processes = [main, *main.children(recursive=True)]
    if not py_spy:
        os.kill(main.pid, signal.SIGUSR1)  # Celery's own dump goes to its log
        time.sleep(2)
        return "(no py-spy: see the worker's log for its SIGUSR1 dump)\n"
    dumps = []
    for process in processes:
        done = subprocess.run(
            [py_spy, "dump", "--locals", "--pid", str(process.pid)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        dumps.append(f"=== pid {process.pid} {process.cmdline()[:6]}\n{done.stdout}{done.stderr}")
    return "\n".join(dumps)


def one_run(worker: Worker, index: int, out: Path, py_spy: str | None, rng: random.Random) -> float:
    """Start the worker, SIGTERM its group at a random moment, return seconds to exit (inf when
    it outlived the kill deadline)."""
    worker.start(wait=False)
    # From the start: while the worker boots, forks its pool, connects, and then runs.
    time.sleep(rng.uniform(0.0, 12.0))
    worker.signal_all(signal.SIGTERM)
    termed = time.monotonic()
    try:
        worker.process.wait(timeout=HEROKU_KILL_AFTER)
        took = time.monotonic() - termed
    except subprocess.TimeoutExpired:
        took = float("inf")
        (out / f"hang-{index:03d}.txt").write_text(stacks(worker, py_spy))
    worker.stop(signal.SIGKILL)
    if took == float("inf"):
        shutil.copy(worker.log_path, out / f"hang-{index:03d}.log")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=40)
    parser.add_argument("--rate", type=float, default=40, help="callbacks posted per second")
    parser.add_argument("--soft-shutdown", default="4", help="WORKER_SOFT_SHUTDOWN_SECONDS")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/sigterm-hunt"))
    parser.add_argument("--py-spy", default=shutil.which("py-spy"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)

    server = RedisServer(args.out / "redis", appendonly=True).start()
    database = f"sqlite:///{args.out / 'store.db'}"
    Store(database).upgrade()
    env = base_env(
        REDIS_URL=server.url,
        DATABASE_URL=database,
        CALLBACK_TOKENS=TOKEN,
        VISIBILITY_TIMEOUT_SECONDS="10",
        WORKER_SOFT_SHUTDOWN_SECONDS=args.soft_shutdown,
        REMAP_SIGTERM="SIGQUIT",
    )
    settings = Settings(callback_tokens=(TOKEN,), redis_url=server.url, database_url=database)
    poster = Poster(settings, args.rate)
    threading.Thread(target=poster.run, daemon=True).start()
    worker = Worker(env, args.out / "worker.log", queues=",".join(QUEUES))
    deadline = time.monotonic() + args.minutes * 60
    times: list[float] = []
    try:
        for index in range(args.runs):
            if time.monotonic() > deadline:
                break
            took = one_run(worker, index, args.out, args.py_spy, rng)
            times.append(took)
            print(f"run {index:3d}: exited in {took:5.1f}s (posted {poster.sent})", flush=True)
    finally:
        poster.stop.set()
        worker.stop(signal.SIGKILL)
        server.stop()
    finite = sorted(t for t in times if t != float("inf"))
    hangs = len(times) - len(finite)
    print(
        f"{len(times)} runs, {hangs} past {HEROKU_KILL_AFTER:.0f}s; exit times: "
        f"median {finite[len(finite) // 2]:.1f}s, max {finite[-1]:.1f}s"
        if finite
        else ""
    )


if __name__ == "__main__":
    main()
