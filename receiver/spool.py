"""The local spool: where an event goes, durably, when Redis cannot take it.

A 2xx means the event is in Redis or here. One file per event, named so that names sort in
arrival order, written under a temporary name, fsynced, renamed into place and the directory
fsynced: a file with the final name is always complete, and several gunicorn workers (or hosts
sharing a volume) never see each other's half-written files.

Draining publishes each file with the publisher's claim+push script, oldest first, then deletes
it. One drainer at a time holds an ``flock`` on the directory, so several web processes and the
``tavus-callbacks spool drain`` command can all try without publishing a file twice; a crash
between the push and the delete republishes it, and the claim turns that into a no-op, exactly
as it does for a sender's resend that was spooled twice.

The hot path never touches this module: only a publish that failed does.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import redis

from schemas.backoff import backoff
from schemas.messages import EventMessage
from schemas.spool_files import SUFFIX, spooled_files, written_at

from . import metrics

log = logging.getLogger(__name__)

REJECTED = "rejected"  # files that do not parse are moved here, never deleted
_LOCK_NAME = ".drain.lock"
# A temporary file older than this belongs to a writer that died before answering; the sender
# got no 2xx for it, so it can go.
_STALE_TEMP_SECONDS = 3600

Publish = Callable[[EventMessage], "str | None"]


@dataclass(frozen=True)
class DrainReport:
    published: int = 0  # pushed to the queue
    duplicates: int = 0  # already claimed (a resend, or a file published before a crash)
    rejected: int = 0  # unreadable files moved to rejected/
    remaining: int = 0  # still spooled when the drain stopped
    busy: bool = False  # another drainer holds the lock: nothing was done
    error: str | None = None  # why the drain stopped early (Redis unreachable...)

    @property
    def complete(self) -> bool:
        return not self.busy and self.error is None


class Spool:
    """A directory of spooled events."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def put(self, message: EventMessage) -> Path:
        """Write ``message`` durably; raise ``OSError`` when it cannot be (disk full, read-only)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        final = self.directory / name
        temp = self.directory / f".{name}.tmp"
        try:
            # Bodies hold transcripts and other personal data: readable by this user only.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(orjson.dumps(message))
                file.flush()
                os.fsync(file.fileno())
            os.rename(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
        _fsync_directory(self.directory)
        return final

    def pending(self) -> list[Path]:
        """Spooled events, oldest first."""
        return spooled_files(self.directory)

    def size(self) -> int:
        return len(self.pending())

    def oldest_age_seconds(self) -> float | None:
        pending = self.pending()
        if not pending:
            return None
        return max(0.0, time.time() - written_at(pending[0]))

    def writable(self) -> bool:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.directory, os.W_OK | os.X_OK)

    def drain(self, publish: Publish, limit: int | None = None) -> DrainReport:
        """Publish spooled events oldest first, deleting each once it is in the queue.

        Stops at the first ``redis.RedisError`` (the rest stays for the next drain). Returns at
        once, with ``busy``, when another process is draining.
        """
        with self._drain_lock() as held:
            if not held:
                return DrainReport(busy=True, remaining=self.size())
            self._remove_stale_temporaries()
            counts = {"published": 0, "duplicates": 0, "rejected": 0}
            error = None
            for path in self.pending()[:limit]:
                try:
                    outcome = self._publish_file(path, publish)
                except redis.RedisError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                    break
                counts[outcome] += 1
            return DrainReport(**counts, remaining=self.size(), error=error)

    def _publish_file(self, path: Path, publish: Publish) -> str:
        try:
            message = orjson.loads(path.read_bytes())
            first_id = publish(message)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.error("spooled file %s is unreadable (%s); moved to %s/", path.name, exc, REJECTED)
            rejected = self.directory / REJECTED
            rejected.mkdir(mode=0o700, exist_ok=True)
            os.rename(path, rejected / path.name)
            return "rejected"
        path.unlink()
        return "duplicates" if first_id is not None else "published"

    @contextlib.contextmanager
    def _drain_lock(self) -> Iterator[bool]:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.error("cannot open the spool's drain lock: %s", exc)
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def _remove_stale_temporaries(self) -> None:
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".tmp") and entry.stat().st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable: without this a power cut can forget the new name."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# After a failed publish, requests go straight to the spool for this long instead of each
# waiting on a Redis that is not answering; the first successful drain ends it sooner.
BROKER_BACKOFF_SECONDS = 1.0
# While Redis refuses drains: 0.25 s doubling to 2 s, so the spool empties about a second after
# Redis answers again.
_RETRY_BASE_SECONDS = 0.25
_RETRY_CAP_SECONDS = 2.0


class Drainer:
    """A daemon thread per web process that drains the spool whenever it holds something.

    It looks every ``interval`` seconds (cheap: one directory listing), right after this process
    spooled an event, and, while Redis is down, retries with a short backoff so the spool empties
    within about a second of Redis answering again.
    """

    def __init__(self, spool: Spool, publish: Publish, interval: float) -> None:
        self.spool = spool
        self._publish = publish
        self._interval = interval
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._start_lock = threading.Lock()
        self._broker_down_until = 0.0

    def start(self) -> None:
        """Start the thread in this process (again after a fork: threads do not survive one)."""
        if self._interval <= 0:
            return
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="spool-drainer", daemon=True)
            self._thread.start()

    def broker_suspect(self) -> bool:
        """True shortly after a publish failed: spool at once rather than wait on Redis again."""
        return time.monotonic() < self._broker_down_until

    def note_failure(self) -> None:
        self._broker_down_until = time.monotonic() + BROKER_BACKOFF_SECONDS

    def spooled(self) -> None:
        """This process just spooled an event: make sure someone drains it."""
        self.start()
        self._wake.set()

    def drain_once(self) -> DrainReport:
        report = self.spool.drain(self._publish)
        metrics.count_drained(report.published, report.duplicates, report.rejected)
        if report.complete:
            self._broker_down_until = 0.0
        elif report.error:
            self.note_failure()
        if report.published or report.duplicates:
            log.info(
                "spool drained: %d published, %d duplicates, %d remaining",
                report.published,
                report.duplicates,
                report.remaining,
            )
        return report

    def _run(self) -> None:
        retry = 0.0
        failed = 0  # drains in a row that Redis refused
        while True:
            if retry:
                time.sleep(retry)  # Redis is down: retry on our own schedule, not per request
            else:
                self._wake.wait(self._interval)
            self._wake.clear()
            try:
                if not self.spool.pending():
                    retry = 0.0
                    continue
                report = self.drain_once()
            except Exception:  # a boundary: the thread must outlive any one failure
                log.exception("spool drain failed")
                retry = self._interval
                continue
            failed = 0 if report.complete or report.busy else failed + 1
            if report.complete:
                retry = 0.0
            elif report.busy:
                retry = min(self._interval, 1.0)  # another process drains; look again soon
            else:
                retry = backoff(failed, _RETRY_CAP_SECONDS, base=_RETRY_BASE_SECONDS)
