"""bench/netdelay.py, the delaying proxy `bench --network-delay-ms` puts in front of Redis and
PostgreSQL: its own process, real sockets, a real echo server behind it."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import netdelay


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)
        self.request.sendall(b"<closed>")  # after the client's half-close, then close


@pytest.fixture
def echo_url() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"redis://127.0.0.1:{server.server_address[1]}/0"
    server.shutdown()
    server.server_close()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def round_trip(sock: socket.socket, payload: bytes) -> float:
    started = time.perf_counter()
    sock.sendall(payload)
    received = b""
    while len(received) < len(payload):
        received += sock.recv(65536)
    assert received == payload
    return time.perf_counter() - started


def test_each_way_is_delayed_and_every_byte_arrives_in_order(echo_url, tmp_path: Path) -> None:
    cpu: dict[str, float] = {}
    with netdelay.delayed(echo_url, 20, tmp_path, cpu) as url:
        assert url != echo_url
        with socket.create_connection(("127.0.0.1", port_of(url))) as sock:
            trips = [round_trip(sock, b"ping %d" % n) for n in range(5)]
            big = bytes(range(256)) * 4000  # 1 MB: many chunks, one order
            round_trip(sock, big)
            sock.shutdown(socket.SHUT_WR)  # a half-close travels too, after the data
            assert sock.recv(100) == b"<closed>"
    assert min(trips) >= 0.040, trips  # 20 ms there, 20 ms back
    assert max(trips) < 0.5, trips
    assert "redis" in cpu and cpu["redis"] >= 0


def test_connections_run_side_by_side(echo_url, tmp_path: Path) -> None:
    """Latency, not a queue: ten clients each waiting a round trip take about one round trip."""
    with netdelay.delayed(echo_url, 50, tmp_path, {}) as url:
        socks = [socket.create_connection(("127.0.0.1", port_of(url))) for _ in range(10)]
        round_trip(socks[0], b"warm")
        started = time.perf_counter()
        threads = [threading.Thread(target=round_trip, args=(s, b"x")) for s in socks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        took = time.perf_counter() - started
        for sock in socks:
            sock.close()
    assert 0.1 <= took < 0.5, took


def test_no_delay_or_no_host_is_the_url_itself(tmp_path: Path) -> None:
    with netdelay.delayed("redis://127.0.0.1:6379/0", 0, tmp_path, {}) as url:
        assert url == "redis://127.0.0.1:6379/0"
    with netdelay.delayed("sqlite:////tmp/x.db", 1, tmp_path, {}) as url:
        assert url == "sqlite:////tmp/x.db"
    assert not list(tmp_path.iterdir()), "no proxy was started"
