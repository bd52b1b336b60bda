"""A delaying TCP proxy: the network hop to Redis or PostgreSQL that production has and
loopback does not (``tavus-callbacks bench --network-delay-ms N``).

Each chunk read from one side is written to the other ``N`` ms after it arrived, in order,
each way; chunks keep flowing meanwhile, as on a real link (latency, not a bandwidth cap). It
runs on an asyncio loop in a thread of the benchmark's own process: no root, no namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    due: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def send() -> None:
        while True:
            at, chunk = await due.get()
            if not chunk:
                break
            wait = at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(send())
    try:
        while chunk := await reader.read(65536):
            due.put_nowait((time.monotonic() + delay, chunk))
    except OSError:
        pass
    due.put_nowait((0.0, b""))
    with contextlib.suppress(OSError):
        await sender


class DelayProxy:
    """Listens on a free local port; every connection goes to ``target`` with ``delay_ms``."""

    def __init__(self, target_host: str, target_port: int, delay_ms: float) -> None:
        self.target = (target_host, target_port)
        self.delay = delay_ms / 1000
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netdelay", daemon=True)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                _pipe(client_r, server_w, self.delay), _pipe(server_r, client_w, self.delay)
            )
        except asyncio.CancelledError:
            pass  # the proxy stops: asyncio's streams would report a cancelled handler
        finally:
            for writer in (client_w, server_w):
                writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=512)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> DelayProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Close every connection, then the loop: nothing left pending at exit."""
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@contextmanager
def delayed(url: str, delay_ms: float) -> Iterator[str]:
    """``url`` (redis://, postgresql://) reached through a proxy adding ``delay_ms`` each way;
    ``url`` itself when the delay is 0 or it names no host (SQLite)."""
    parts = urlsplit(url)
    if not delay_ms or not parts.hostname:
        yield url
        return
    proxy = DelayProxy(parts.hostname, parts.port or _DEFAULT_PORTS[parts.scheme], delay_ms)
    proxy.start()
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    try:
        yield urlunsplit(parts._replace(netloc=f"{userinfo}127.0.0.1:{proxy.port}"))
    finally:
        proxy.stop()


_DEFAULT_PORTS = {"redis": 6379, "postgresql": 5432, "postgresql+psycopg": 5432}
