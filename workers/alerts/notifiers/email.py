"""Email over SMTP: STARTTLS (587), implicit TLS (465), or plain for a local sink (25).

Certificates are verified against the system's trust store (``SSL_CERT_FILE`` adds one). A
refused login, a refused recipient or an untrusted certificate is permanent; a dropped
connection, a timeout or a 4xx reply is transient. The Message-ID is the alert's own, so a copy
sent again after a crash is recognisably the same mail.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import ClassVar

from schemas.settings import Settings

from .base import SEVERITY_LABELS, Alert, PermanentDeliveryError, TransientDeliveryError

DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


@dataclass
class EmailNotifier:
    channel: ClassVar[str] = "email"

    host: str
    sender: str
    recipients: tuple[str, ...]
    security: str = "starttls"
    port: int | None = None  # None: the usual port of ``security``
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr, a log or an error
    timeout: float = 10.0
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        self.port = self.port or DEFAULT_PORTS[self.security]

    @classmethod
    def from_settings(cls, settings: Settings) -> EmailNotifier | None:
        if not (settings.smtp_host and settings.alert_email_from and settings.alert_email_to):
            return None
        return cls(
            host=settings.smtp_host,
            sender=settings.alert_email_from,
            recipients=settings.alert_email_to,
            security=settings.smtp_security,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.alert_timeout_seconds,
        )

    def send(self, alert: Alert) -> None:
        message = email_message(alert, self.sender, self.recipients)
        where = f"{self.host}:{self.port}"
        try:
            with self._connect() as smtp:
                if self.security == "starttls":
                    smtp.starttls(context=self._context())
                if self.username:
                    smtp.login(self.username, self.password or "")
                smtp.send_message(message)
        except smtplib.SMTPAuthenticationError as exc:
            raise PermanentDeliveryError(f"{where} refused the login ({exc.smtp_code})") from None
        except smtplib.SMTPNotSupportedError:
            raise PermanentDeliveryError(f"{where} does not offer STARTTLS or AUTH") from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentDeliveryError(
                f"{where} refused the recipients {', '.join(exc.recipients)}"
            ) from None
        except smtplib.SMTPConnectError as exc:
            raise TransientDeliveryError(
                f"{where} refused the connection ({exc.smtp_code})"
            ) from None
        except smtplib.SMTPResponseException as exc:
            reply = f"SMTP {exc.smtp_code} from {where}: {_text(exc.smtp_error)}"
            error = TransientDeliveryError if 400 <= exc.smtp_code < 500 else PermanentDeliveryError
            raise error(reply) from None
        except ssl.SSLCertVerificationError as exc:
            raise PermanentDeliveryError(
                f"certificate of {where} not trusted: {exc.verify_message}"
            ) from None
        except ssl.SSLError as exc:
            # Mostly a wrong SMTP_SECURITY for the port (TLS spoken to a STARTTLS port).
            raise PermanentDeliveryError(f"TLS with {where} failed: {exc.reason}") from None
        except (smtplib.SMTPServerDisconnected, TimeoutError, OSError) as exc:
            raise TransientDeliveryError(f"{where} unreachable: {type(exc).__name__}") from None
        except smtplib.SMTPException as exc:
            raise PermanentDeliveryError(f"{where}: {type(exc).__name__}") from None

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(
                self.host, self.port, timeout=self.timeout, context=self._context()
            )
        return smtplib.SMTP(self.host, self.port, timeout=self.timeout)

    def _context(self) -> ssl.SSLContext:
        return self.ssl_context or ssl.create_default_context()


def email_message(alert: Alert, sender: str, recipients: tuple[str, ...]) -> EmailMessage:
    label = SEVERITY_LABELS.get(alert.severity, alert.severity.upper())
    message = EmailMessage()
    message["Subject"] = f"[{label}] {_one_line(alert.title)}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{alert.alert_id}@tavus-callbacks>"
    message["X-Tavus-Alert-Cause"] = _one_line(alert.cause_key)
    lines = [alert.text, "", "Details"]
    lines += [f"  {name}: {value}" for name, value in alert.short_facts()]
    lines += [
        "",
        f"Cause key: {alert.cause_key}",
        f"Event: {alert.event_id or '-'}",
        f"Raised: {alert.raised_at:%Y-%m-%d %H:%M:%S} UTC",
    ]
    message.set_content("\n".join(lines))
    return message


def _one_line(text: str) -> str:
    """Header values: a payload's newline must not start a header of its own."""
    return " ".join(text.split())


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return _one_line(text)[:200]
