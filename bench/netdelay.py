"""A delaying TCP proxy: the network hop to Redis or PostgreSQL that production has and
loopback does not (``tavus-callbacks bench --network-delay-ms N``).

Each chunk read from one side is written to the other ``N`` ms after it arrived, in order,
each way; chunks keep flowing meanwhile, as on a real link (latency, not a bandwidth cap).

The kernel's ``tc netem`` would be the real thing, but it needs a kernel module that the
machines this runs on may lack, and root. So the proxy is a process of its own (``python -m
bench.netdelay``): it does not share the harness's interpreter lock, and its CPU time, which a
real network would not take from the machine under test, is measured and reported apart. Each
connection is a process, each direction of it a reader thread and a sender thread: a thread
sleeps with microsecond precision, where an event loop's timers round up to whole milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psutil

from .services import Process, free_port, listening, python_env

_CHUNK = 65536
_DEFAULT_PORTS = {"redis": 6379, "postgresql": 5432, "postgresql+psycopg": 5432}


def _send_when_due(due: queue.SimpleQueue[tuple[float, bytes]], dest: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while True:
            at, chunk = due.get()
            if not chunk:
                break
            wait = at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            dest.sendall(chunk)
        dest.shutdown(socket.SHUT_WR)  # the far side closed its end: pass that on, in order


def _forward(source: socket.socket, dest: socket.socket, delay: float) -> threading.Thread:
    """Start carrying ``source`` to ``dest`` ``delay`` seconds late; the thread that sends."""
    due: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
    sender = threading.Thread(target=_send_when_due, args=(due, dest), daemon=True)
    sender.start()

    def read() -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(_CHUNK):
                due.put((time.monotonic() + delay, chunk))
        due.put((0.0, b""))

    threading.Thread(target=read, daemon=True).start()
    return sender


def _connect(client: socket.socket, target: tuple[str, int], delay: float) -> None:
    try:
        server = socket.create_connection(target, timeout=5)
    except OSError:
        client.close()
        return
    server.settimeout(None)
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    senders = [_forward(client, server, delay), _forward(server, client, delay)]
    for sender in senders:
        sender.join()
    client.close()
    server.close()


def serve(port: int, target: tuple[str, int], delay_ms: float) -> None:
    """Accept on ``port`` until killed; each connection is carried to ``target`` by a process
    of its own (forked, as inetd did): connections never queue on one interpreter lock."""
    listener = socket.create_server(("127.0.0.1", port), backlog=512)
    while True:
        client, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            _connect(client, target, delay_ms / 1000)
            os._exit(0)
        client.close()
        with contextlib.suppress(ChildProcessError):  # reap the finished ones (CPU counted)
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass


class DelayProxy:
    """``python -m bench.netdelay`` on a free port, in front of ``target``."""

    def __init__(self, host: str, port: int, delay_ms: float, log: Path) -> None:
        self.port = free_port()
        command = [
            sys.executable, "-m", "bench.netdelay", "--listen-port", str(self.port),
            "--target", f"{host}:{port}", "--delay-ms", f"{delay_ms:g}",
        ]  # fmt: skip
        self.process = Process(f"netdelay-{port}", command, python_env(), log)

    def start(self) -> DelayProxy:
        self.process.start().wait_ready(lambda: listening(self.port), timeout=15)
        return self

    def cpu_seconds(self) -> float:
        """User and system time the proxy has used so far, its connections' processes too."""
        try:
            parent = psutil.Process(self.process.popen.pid)
            own = parent.cpu_times()
            live = sum(sum(child.cpu_times()[:2]) for child in parent.children())
            return own.user + own.system + own.children_user + own.children_system + live
        except (psutil.Error, AttributeError):
            return 0.0

    def stop(self) -> None:
        self.process.stop()


@contextmanager
def delayed(url: str, delay_ms: float, log_dir: Path, cpu: dict[str, float]) -> Iterator[str]:
    """``url`` (redis://, postgresql://) reached through a proxy adding ``delay_ms`` each way;
    ``url`` itself when the delay is 0 or it names no host (SQLite). The proxy's CPU seconds
    are added to ``cpu`` under the URL's scheme when it stops; its log is in ``log_dir``."""
    parts = urlsplit(url)
    if not delay_ms or not parts.hostname:
        yield url
        return
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    proxy = DelayProxy(parts.hostname, port, delay_ms, log_dir / f"netdelay-{port}.log")
    proxy.start()
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    try:
        yield urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{proxy.port}"))
    finally:
        cpu[parts.scheme] = cpu.get(parts.scheme, 0.0) + proxy.cpu_seconds()
        proxy.stop()


def median_ms(call: Callable[[], object], count: int = 200) -> float:
    """The median time ``call`` (one round trip) takes, in ms, over ``count`` calls."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.netdelay", description=__doc__)
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--delay-ms", type=float, required=True, help="added each way")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.listen_port, (host, int(port)), args.delay_ms)


if __name__ == "__main__":
    main()
