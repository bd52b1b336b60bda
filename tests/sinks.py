"""Real stand-ins for the alert channels, on free ports: an HTTP server for Slack and the
webhook, and aiosmtpd for SMTP (plain, STARTTLS or implicit TLS, with or without a login).

Both run in the test process and keep what they received; a Celery worker subprocess reaches
them over TCP like any other endpoint.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.services import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class HttpSink:
    """Answers each POST with the next of ``statuses`` (then 200) after ``delay`` seconds."""

    def __init__(
        self, statuses: tuple[int, ...] = (), delay: float = 0.0, always: int = 200, port: int = 0
    ):
        self.received: list[Received] = []
        self.statuses = list(statuses)
        self.delay = delay
        self.always = always
        self.headers: dict[str, str] = {}  # extra reply headers
        self.on_post: Callable[[], None] | None = None  # called before each answer (a fault)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> HttpSink:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def accepted(self) -> list[Received]:
        """The requests that were answered 2xx."""
        with self._lock:
            return [r for r in self.received if r.headers.get("x-sink-status", "").startswith("2")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(sink.delay)
                with sink._lock:
                    status = sink.statuses.pop(0) if sink.statuses else sink.always
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    headers["x-sink-status"] = str(status)
                    sink.received.append(Received(self.path, headers, body))
                if sink.on_post is not None:
                    sink.on_post()
                reply = b"ok" if status < 300 else b"no_service"
                try:
                    self.send_response(status)
                    for name, value in sink.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                except OSError:
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: Message

    def body(self) -> str:
        return self.message.get_body(("plain",)).get_content()


class TLSFiles:
    """A private CA and a certificate for 127.0.0.1, as contexts and as a CA file on disk."""

    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


class SmtpSink:
    """aiosmtpd on a free port. ``security``: none, starttls or tls; ``password`` requires a
    login (user ``alerts``) with it."""

    USER = "alerts"

    def __init__(
        self, security: str = "none", tls: TLSFiles | None = None, password: str | None = None
    ) -> None:
        self.received: list[Mail] = []
        self.logins: list[tuple[str, bool]] = []
        self.password = password
        self.port = free_port()
        options: dict[str, Any] = {}
        if security == "starttls":
            options.update(tls_context=tls.server_context(), require_starttls=True)
        if security == "tls":
            options.update(ssl_context=tls.server_context())
        if password is not None:
            options.update(authenticator=self._authenticate, auth_required=True)
        self._controller = Controller(
            self, hostname="127.0.0.1", port=self.port, server_hostname="127.0.0.1", **options
        )

    def start(self) -> SmtpSink:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.USER
            and auth_data.password.decode() == self.password
        )
        self.logins.append((auth_data.login.decode(), ok))
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535

    async def handle_DATA(self, server, session, envelope) -> str:
        message = message_from_bytes(envelope.content, policy=default_policy)
        self.received.append(Mail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 OK"


def verified(received: list[Received], secret: str) -> list[Received]:
    """Every request checked with the Standard Webhooks reference library (raises if one fails)."""
    from standardwebhooks import Webhook

    webhook = Webhook(secret)
    for request in received:
        webhook.verify(request.body, request.headers)
    return received
