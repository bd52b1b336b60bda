"""Slack, through an incoming webhook: a Block Kit message a person can act on at a glance.

Header (severity and title), the text paragraph by paragraph, the short facts as fields, and a
context line with the cause key. Block Kit limits: a header holds 150 characters, a section
3,000, a field 2,000, a section 10 fields; longer values are cut, never rejected.
"""

from __future__ import annotations

import orjson

from schemas.settings import Settings

from .base import SEVERITY_LABELS, Alert
from .http import post_json

EMOJI = {
    "critical": ":rotating_light:",
    "error": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}
HEADER_LIMIT, SECTION_LIMIT, FIELD_LIMIT, MAX_FIELDS = 150, 3000, 2000, 10


class SlackNotifier:
    channel = "slack"

    def __init__(self, webhook_url: str, timeout: float) -> None:
        self._url = webhook_url
        self._timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackNotifier | None:
        if not settings.slack_webhook_url:
            return None
        return cls(settings.slack_webhook_url, settings.alert_timeout_seconds)

    def send(self, alert: Alert) -> None:
        post_json(self._url, orjson.dumps(slack_message(alert)), self._timeout)


def slack_message(alert: Alert) -> dict:
    """The incoming-webhook payload: ``text`` is the notification, ``blocks`` the message."""
    label = SEVERITY_LABELS.get(alert.severity, alert.severity.upper())
    headline = f"{label}: {alert.title}"
    blocks: list[dict] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": _cut(f"{EMOJI.get(alert.severity, '')} {headline}".strip(), HEADER_LIMIT),
                "emoji": True,
            },
        }
    ]
    for paragraph in alert.text.split("\n\n"):
        if paragraph.strip():
            blocks.append(_mrkdwn_section(_escape(paragraph)))
    fields = [
        {"type": "mrkdwn", "text": _cut(f"*{_escape(name)}*\n{_escape(value)}", FIELD_LIMIT)}
        for name, value in alert.short_facts()[:MAX_FIELDS]
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    context = f"cause `{_escape(alert.cause_key)}`"
    if alert.event_id:
        context += f" · event `{alert.event_id}`"
    context += f" · raised {alert.raised_at:%Y-%m-%d %H:%M:%S} UTC"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    return {"text": _escape(headline), "blocks": blocks}


def _mrkdwn_section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_LIMIT)}}


def _escape(text: str) -> str:
    """Slack reads ``<...>`` as links and mentions: a payload must not be able to ping @channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
