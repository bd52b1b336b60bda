"""Realistic Tavus callbacks, built and posted like ``stripe trigger``: for trying a deployment,
for tests and for the benchmark. The shapes follow ``TAVUS-CALLBACKS.md``."""

from __future__ import annotations

import hashlib
import hmac
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

LINES = (
    "Hi, thanks for joining. How can I help you today?",
    "I'd like to check the status of my order, please.",
    "Of course. Could you give me the order number?",
    "It's 4417-2290. It was supposed to arrive on Monday.",
    "Thanks. I can see it left our warehouse yesterday and is with the courier now.",
    "Great, is there a tracking link I can use?",
    "Yes, I've just sent it to the email address on your account.",
)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _video_stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def conversation_event(
    conversation_id: str, event_type: str, at: datetime, properties: dict[str, Any]
) -> dict[str, Any]:
    return {
        "properties": properties,
        "conversation_id": conversation_id,
        "webhook_url": "https://example.com/webhook",
        "event_type": event_type,
        "message_type": event_type.split(".", 1)[0],
        "timestamp": _stamp(at),
    }


def transcript(turns: int, start: datetime) -> list[dict[str, Any]]:
    """A transcript of ``turns`` user/assistant turns after the system prompt."""
    entries: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a friendly support agent for an online shop."}
    ]
    for turn in range(turns):
        role = "assistant" if turn % 2 == 0 else "user"
        entries.append(
            {
                "role": role,
                "content": LINES[turn % len(LINES)],
                "timestamp": (start + timedelta(seconds=4 * turn)).timestamp(),
                "seconds_from_start": 4.0 * turn,
                "inference_id": str(uuid.uuid4()) if role == "assistant" else None,
            }
        )
    return entries


def conversation_lifecycle(
    conversation_id: str | None = None,
    bucket: str = "my-tavus-recordings",
    turns: int = 12,
    start: datetime | None = None,
) -> list[dict[str, Any]]:
    """A whole conversation: joined (both names), transcript, perception, recording, shutdown,
    an objective and a guardrail, in the order Tavus usually sends them."""
    conversation_id = conversation_id or f"c{uuid.uuid4().hex[:12]}"
    replica_id = "r79e1c033f"
    start = start or datetime.now(UTC) - timedelta(minutes=5)
    end = start + timedelta(seconds=4 * turns + 10)
    key = f"recordings/{conversation_id}/{int(start.timestamp())}.mp4"
    joined = {"replica_id": replica_id}
    return [
        conversation_event(conversation_id, "system.pal_joined", start, joined),
        conversation_event(conversation_id, "system.replica_joined", start, joined),
        guardrail(conversation_id, "no_medical_advice"),
        objective(conversation_id, "collect_order_number", {"order_number": "4417-2290"}),
        conversation_event(
            conversation_id,
            "system.shutdown",
            end,
            {"replica_id": replica_id, "shutdown_reason": "participant_left_timeout reached"},
        ),
        conversation_event(
            conversation_id,
            "application.transcription_ready",
            end + timedelta(seconds=2),
            {"replica_id": replica_id, "transcript": transcript(turns, start)},
        ),
        conversation_event(
            conversation_id,
            "application.perception_analysis",
            end + timedelta(seconds=20),
            {"analysis": "## Summary\nThe user appeared calm and engaged throughout the call."},
        ),
        conversation_event(
            conversation_id,
            "application.recording_ready",
            end + timedelta(seconds=45),
            {
                "storage_provider": "s3",
                "storage_uri": f"s3://{bucket}/{key}",
                "bucket_name": bucket,
                "s3_key": key,
                "duration": 4 * turns + 10,
            },
        ),
    ]


def guardrail(conversation_id: str, name: str) -> dict[str, Any]:
    return {"conversation_id": conversation_id, "properties": {"guardrail": name}}


def objective(conversation_id: str, name: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The nested form reported by code that saw real payloads."""
    return {
        "conversation_id": conversation_id,
        "event_type": "conversation.objective.completed",
        "message_type": "conversation",
        "properties": {"objective_name": name, "output_variables": variables},
    }


def replica_training(replica_id: str, failed: bool) -> dict[str, Any]:
    if failed:
        return {
            "replica_id": replica_id,
            "status": "error",
            "error_message": "There was an issue processing your training video. "
            "The video provided does not meet the minimum duration requirement for training",
        }
    return {"replica_id": replica_id, "status": "ready"}


def video(video_id: str, failed: bool, at: datetime | None = None) -> dict[str, Any]:
    at = at or datetime.now(UTC)
    common = {
        "video_id": video_id,
        "video_name": f"replica_id: r90bbd427f71 - video: {video_id}",
        "replica_id": "r90bbd427f71",
        "data": {"script": "Hello this is a test to give examples of callbacks"},
        "created_at": _video_stamp(at - timedelta(minutes=2)),
        "updated_at": _video_stamp(at),
    }
    if failed:
        return {
            **common,
            "status": "error",
            "status_details": "The script could not be rendered: unsupported characters.",
            "generation_progress": "0/100",
            "download_url": None,
            "hosted_url": f"https://videos.tavus.io/video/{video_id}",
            "stream_url": None,
        }
    return {
        **common,
        "status": "ready",
        "status_details": "Your request has processed successfully!",
        "generation_progress": "100/100",
        "download_url": f"https://stream.mux.com/{video_id}/high.mp4?download=1",
        "hosted_url": f"https://videos.tavus.io/video/{video_id}",
        "stream_url": f"https://stream.mux.com/{video_id}.m3u8",
    }


def document(document_id: str, status: str, progress: int) -> dict[str, Any]:
    return {"document_id": document_id, "status": status, "progress": progress}


SCENARIOS = ("conversation", "guardrail", "objective", "replica", "video", "document")


def post_call_action(conversation_id: str) -> dict[str, Any]:
    """What a post-call action with ``auth.type: "hmac"`` delivers once the call ended: a tool
    call, posted signed (``signed``)."""
    arguments = {"crm_account": "acme-42", "summary": "Asked for a quote on 40 seats."}
    return {
        "message_type": "conversation",
        "event_type": "conversation.tool_call",
        "conversation_id": conversation_id,
        "properties": {
            "tool_call_id": f"tc_{uuid.uuid4().hex[:10]}",
            "name": "create_crm_note",
            "arguments": orjson.dumps(arguments).decode(),
        },
    }


def is_tool_delivery(body: dict[str, Any]) -> bool:
    return body.get("event_type") == "conversation.tool_call"


def signed(body: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    """The exact bytes to post and Tavus's ``X-Tavus-Signature`` (HMAC-SHA256 of them, hex)."""
    raw = orjson.dumps(body)
    signature = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"Content-Type": "application/json", "X-Tavus-Signature": signature}


def scenario(name: str, post_call: bool = False) -> Iterator[dict[str, Any]]:
    """The bodies of one named scenario; with ``post_call``, the conversation ends with a post-call
    action (to be posted ``signed``)."""
    suffix = uuid.uuid4().hex[:10]
    if name == "conversation":
        bodies = conversation_lifecycle()
        yield from bodies
        if post_call:
            yield post_call_action(bodies[0]["conversation_id"])
    elif name == "guardrail":
        yield guardrail(f"c{suffix}", "no_competitor_mentions")
    elif name == "objective":
        yield objective(f"c{suffix}", "qualify_lead", {"budget": "50k", "timeline": "Q3"})
    elif name == "replica":
        yield replica_training(f"r{suffix}", failed=False)
        yield replica_training(f"r{suffix[::-1]}", failed=True)
    elif name == "video":
        yield video(f"v{suffix}", failed=False)
        yield video(f"v{suffix[::-1]}", failed=True)
    elif name == "document":
        for status, progress in (("started", 0), ("processing", 50), ("ready", 100)):
            yield document(f"d{suffix}", status, progress)
    else:
        raise ValueError(f"no scenario {name!r}; choose from {', '.join(SCENARIOS)}")


class PostError(Exception):
    """The callbacks could not be posted at all (no server there, not a URL): one line."""


def post_all(
    url: str,
    bodies: list[dict[str, Any]],
    shuffle: bool = False,
    repeat: int = 1,
    signing_secret: str | None = None,
) -> Iterator[tuple[dict[str, Any], int, dict[str, Any]]]:
    """Post each body ``repeat`` times (in random order with ``shuffle``); yield the replies. A
    tool delivery is signed with ``signing_secret``, as Tavus signs it."""
    sends = [body for body in bodies for _ in range(repeat)]
    if shuffle:
        random.shuffle(sends)
    with requests.Session() as session:
        for body in sends:
            secret = signing_secret if is_tool_delivery(body) else None
            yield body, *_post(session, url, body, secret)


def _post(
    session: requests.Session, url: str, body: dict[str, Any], secret: str | None = None
) -> tuple[int, dict[str, Any]]:
    where = _without_token(url)
    try:
        if secret is None:
            response = session.post(url, json=body, timeout=10)
        else:
            raw, headers = signed(body, secret)
            response = session.post(url, data=raw, headers=headers, timeout=10)
    except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema) as exc:  # fmt: skip
        raise PostError(f"not a callback URL: {where} ({type(exc).__name__})") from exc
    except requests.exceptions.RequestException as exc:
        raise PostError(
            f"nothing answers at {where} ({type(exc).__name__}): is `tavus-callbacks dev` "
            "running? check --url"
        ) from exc
    try:
        reply = response.json()
    except ValueError:  # not our receiver (an HTML 404, a proxy's page)
        reply = {"error": f"HTTP {response.status_code}, not JSON"}
    return response.status_code, reply if isinstance(reply, dict) else {"error": "not an object"}


def _without_token(url: str) -> str:
    """The URL as it may be printed: scheme, host and port, no token (path or password)."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable URL)"
    if not parts.scheme or not parts.hostname:
        return repr(url.split("/callbacks/", 1)[0])
    return f"{parts.scheme}://{parts.hostname}{port}"
