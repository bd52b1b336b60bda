"""Hostile input against the intake, in process, with a real redis-server behind it.

More than 10,000 generated bodies per run, seeded (``derandomize``) so that every run sends the
same ones: wrong types in every field of every schema, values replaced anywhere in the documented
examples, arbitrary JSON, broken bytes (invalid UTF-8, truncations), deep nesting, huge numbers,
NaN and Infinity, duplicate keys, empty bodies. Every answer must be a 2xx or a 4xx with a JSON
object for a body; never a 5xx. The OpenAPI document is checked, and schemathesis fuzzes the
intake from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import Schema
from openapi_spec_validator import validate as validate_openapi

from schemas.callbacks import SCHEMAS_BY_KIND
from schemas.callbacks.conversation import PROPERTIES_BY_EVENT_TYPE, TranscriptEntry
from schemas.callbacks.standalone import GuardrailProperties
from tests.fuzzing import CONFORMANCE
from tests.helpers import FIXTURES, TOKEN, fixture, fixture_json

URL = f"/callbacks/{TOKEN}"
NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))
SEEDED = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def seeded(examples: int) -> settings:
    return settings(SEEDED, max_examples=examples)


class Sender:
    """Posts bodies and checks each answer; counts them, so each test proves its volume."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sent = 0

    def post(self, body: bytes, path: str = URL, **kwargs: Any) -> Any:
        response = self.client.post(path, data=body, **kwargs)
        self.sent += 1
        check_answer(response, body)
        return response


def check_answer(response: Any, body: bytes) -> None:
    where = f"{response.status_code} for {body[:300]!r}"
    assert 200 <= response.status_code < 500, where
    assert response.mimetype == "application/json", where
    payload = orjson.loads(response.data)
    assert isinstance(payload, dict), where
    if response.status_code >= 400:
        assert isinstance(payload.get("error"), str), where
    else:
        assert payload["status"] in ("accepted", "duplicate", "spooled"), where
        assert payload["event_id"], where


# Bodies each test must have sent: together, more than 10,000 per run.
QUOTA = {
    "test_any_value_anywhere_in_the_documented_examples": 3000,
    "test_wrong_type_in_every_field_of_every_schema": 1700,
    "test_deep_nesting_huge_numbers_nan_and_broken_strings": 2000,
    "test_broken_bytes_truncated_and_invalid_utf8": 2000,
    "test_arbitrary_json_documents": 2000,
}
assert sum(QUOTA.values()) > 10_000


@pytest.fixture
def sender(client, request: pytest.FixtureRequest) -> Iterator[Sender]:
    sender = Sender(client)
    yield sender
    assert sender.sent >= QUOTA.get(request.node.name, 0), f"only {sender.sent} bodies sent"


# Values of every JSON type, including those JSON cannot say (NaN, Infinity: sent as literals).
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63, max_value=10**40) | st.integers(max_value=-(2**63)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["", " ", "\x00", "\ud800", "2025-07-11T06:45:47Z", "9" * 30, "NaN"]),
)
KEYS = st.text(max_size=8)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


def encode(value: Any) -> bytes:
    """The stdlib encoder: it writes big integers, NaN and Infinity, and lone surrogates."""
    return json.dumps(value, allow_nan=True).encode()


def paths(value: Any, prefix: tuple = (), depth: int = 4) -> list[tuple]:
    """Every place in a document a value sits, down to ``depth`` (first two list items)."""
    found = [prefix] if prefix else []
    if depth == 0:
        return found
    if isinstance(value, dict):
        for key, item in value.items():
            found += paths(item, (*prefix, key), depth - 1)
    elif isinstance(value, list):
        for index, item in enumerate(value[:2]):
            found += paths(item, (*prefix, index), depth - 1)
    return found


def replaced(document: Any, path: tuple, value: Any) -> Any:
    copy = orjson.loads(orjson.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return copy


def removed(document: Any, path: tuple) -> Any:
    copy = orjson.loads(orjson.dumps(document))
    target = copy
    for step in path[:-1]:
        target = target[step]
    del target[path[-1]]
    return copy


DOCUMENTS = [(name, fixture_json(name)) for name in NAMES]
PLACES = [(name, doc, path) for name, doc in DOCUMENTS for path in paths(doc)]


@seeded(3000)
@given(
    place=st.sampled_from(PLACES),
    value=json_values,
    hint=st.sampled_from([None, None, None, *SCHEMAS_BY_KIND]),
)
def test_any_value_anywhere_in_the_documented_examples(sender, place, value, hint) -> None:
    _, document, path = place
    query = {"kind": hint} if hint else None
    sender.post(encode(replaced(document, path, value)), query_string=query)


# Wrong types, one field at a time, in every schema: (example, where the schema sits, schema).
SCHEMA_PLACES: list[tuple[str, tuple, Schema]] = [
    ("shutdown", (), SCHEMAS_BY_KIND["conversation"]),
    ("guardrail", (), SCHEMAS_BY_KIND["guardrail"]),
    ("guardrail", ("properties",), GuardrailProperties()),
    ("objective_flat", (), SCHEMAS_BY_KIND["objective"]),
    ("replica_training_error", (), SCHEMAS_BY_KIND["replica"]),
    ("video_ready", (), SCHEMAS_BY_KIND["video"]),
    ("document_processing", (), SCHEMAS_BY_KIND["document"]),
    ("tool_delivery_post_call", (), SCHEMAS_BY_KIND["tool"]),
    ("transcription_ready_timed", ("properties", "transcript", 0), TranscriptEntry()),
]
EXAMPLE_OF_EVENT_TYPE = {
    json.loads(fixture(name)).get("event_type"): name
    for name in NAMES
    if json.loads(fixture(name)).get("conversation_id") and "properties" in fixture_json(name)
}
SCHEMA_PLACES += [
    (EXAMPLE_OF_EVENT_TYPE[event_type], ("properties",), schema)
    for event_type, schema in PROPERTIES_BY_EVENT_TYPE.items()
    if event_type in EXAMPLE_OF_EVENT_TYPE
]
WRONG_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**64, -(10**30), 1.5, -0.0, 1e308, float("nan"), float("inf"),
    "", " ", "x", "\x00", "\ud800", "9" * 400, [], [None], ["a", 1], {}, {"a": {"b": []}},
    [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],
]  # fmt: skip


def field_names(schema: Schema) -> list[str]:
    return [field.data_key or name for name, field in schema.fields.items()]


def test_wrong_type_in_every_field_of_every_schema(sender) -> None:
    covered: set[tuple[str, str]] = set()
    for name, prefix, schema in SCHEMA_PLACES:
        document = fixture_json(name)
        for field in field_names(schema):
            path = (*prefix, field)
            for value in WRONG_VALUES:
                sender.post(encode(replaced(document, path, value)))
            if _has(document, path):
                sender.post(encode(removed(document, path)))
            # Duplicate keys: the same field twice, a wrong value first and then last.
            good = encode(_get(document, path)) if _has(document, path) else b'"x"'
            for first, last in ((b"[1]", good), (good, b"{}")):
                sender.post(_with_duplicate(document, path, first, last))
            covered.add((type(schema).__name__, field))
    every = {(type(s).__name__, f) for _, _, s in SCHEMA_PLACES for f in field_names(s)}
    assert covered == every
    assert {type(s) for _, _, s in SCHEMA_PLACES} >= {type(s) for s in SCHEMAS_BY_KIND.values()}


def _has(document: Any, path: tuple) -> bool:
    try:
        _get(document, path)
    except (KeyError, IndexError):
        return False
    return True


def _get(document: Any, path: tuple) -> Any:
    for step in path:
        document = document[step]
    return document


_MARK = "\x01placeholder\x01"


def _with_duplicate(document: Any, path: tuple, first: bytes, last: bytes) -> bytes:
    """The document with the field at ``path`` written twice (JSON allows it; last one wins)."""
    raw = encode(replaced(document, path, _MARK))
    key = json.dumps(path[-1] if isinstance(path[-1], str) else "0").encode()
    return raw.replace(encode(_MARK), first + b", " + key + b": " + last, 1)


def _raw_substituted(document: Any, path: tuple, token: bytes) -> bytes:
    return encode(replaced(document, path, _MARK)).replace(encode(_MARK), token, 1)


def nested(depth: int, opener: str) -> bytes:
    if opener == "[":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


hostile_tokens = st.one_of(
    st.builds(nested, st.integers(1, 1100), st.sampled_from("[{")),
    st.builds(lambda n: b"9" * n, st.integers(15, 500)),
    st.builds(lambda n: f"-{'9' * n}.{'9' * n}e{n}".encode(), st.integers(1, 400)),
    st.sampled_from(
        [
            b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e-999", b"1.79e308", b"-0",
            b"0.0e0", b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\u0000"', b'"\xff\xfe"',
            b'"\xc0\xaf"', b'"\xed\xa0\x80"', b"tru", b'"unterminated', b"[1,]", b"{,}", b"01",
        ]
    ),
)  # fmt: skip


@seeded(2000)
@given(place=st.sampled_from(PLACES), token=hostile_tokens)
def test_deep_nesting_huge_numbers_nan_and_broken_strings(sender, place, token) -> None:
    _, document, path = place
    sender.post(_raw_substituted(document, path, token))


@seeded(2000)
@given(name=st.sampled_from(NAMES), data=st.data())
def test_broken_bytes_truncated_and_invalid_utf8(sender, name, data) -> None:
    raw = bytearray(fixture(name))
    how = data.draw(st.sampled_from(["truncate", "flip", "insert", "random"]))
    if how == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    elif how == "insert":
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        raw = bytearray(data.draw(st.binary(max_size=200)))
    sender.post(bytes(raw))


KNOWN_KEYS = sorted(
    {f for s in SCHEMAS_BY_KIND.values() for f in field_names(s)}
    | {f for s in PROPERTIES_BY_EVENT_TYPE.values() for f in field_names(s)}
    | {"properties", "guardrail", "transcript"}
)
KNOWN_VALUES = st.sampled_from(
    [*PROPERTIES_BY_EVENT_TYPE, "conversation.objective.completed", "ready", "error", "c1"]
)


@seeded(2000)
@given(
    body=st.one_of(
        st.dictionaries(
            st.sampled_from(KNOWN_KEYS) | st.text(max_size=8),
            KNOWN_VALUES | json_values,
            max_size=8,
        ),
        json_values,
    ),
    content_type=st.sampled_from([None, "application/json", "text/plain", "multipart/form-data"]),
)
def test_arbitrary_json_documents(sender, body, content_type) -> None:
    sender.post(encode(body), content_type=content_type)


def test_empty_and_whitespace_bodies_and_basic_auth(sender) -> None:
    for body in (b"", b" ", b"\n", b"\xef\xbb\xbf{}", b"null", b"{}", b"[]", b'""', b"0"):
        sender.post(body)
        sender.post(body, path="/callbacks", auth=("tavus", TOKEN))
        assert sender.post(body, path="/callbacks/wrong-token-0123456789").status_code == 401


def test_openapi_document_is_valid_and_describes_the_intake(client) -> None:
    document = client.get("/openapi.json")
    assert document.status_code == 200 and document.mimetype == "application/json"
    spec = document.json
    validate_openapi(spec)
    post = spec["paths"]["/callbacks/{token}"]["post"]
    assert set(post["responses"]) == {"200", "202", "400", "401", "403", "408", "413", "422", "503"}
    schemas = spec["components"]["schemas"]
    kinds = {type(s).__name__ for s in SCHEMAS_BY_KIND.values()}
    properties = {type(s).__name__ for s in PROPERTIES_BY_EVENT_TYPE.values()}
    assert kinds | properties | {"TranscriptEntry"} <= set(schemas)
    variants = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert len(variants) == len(SCHEMAS_BY_KIND) + len(PROPERTIES_BY_EVENT_TYPE)
    assert schemas["ConversationEvent"]["required"] == ["conversation_id", "event_type"]


@pytest.fixture
def openapi_schema(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("openapi_schema")
# What every answer must keep of the document it was generated from.


@schema.include(method="POST").parametrize()
@seeded(100)
def test_schemathesis_against_openapi(case) -> None:
    if "token" in case.path_parameters:
        case.path_parameters["token"] = TOKEN
    else:
        case.headers = {**(case.headers or {}), "Authorization": _basic(TOKEN)}
    response = case.call()
    assert response.status_code < 500, (response.status_code, case.body)
    case.validate_response(
        response,
        checks=CONFORMANCE,
    )


def _basic(token: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"tavus:{token}".encode()).decode()


DEEP = b"[" * 1000 + b"]" * 1000


@pytest.mark.parametrize(
    ("body", "status"),
    [
        # marshmallow keys a list's errors by index: the warnings need str keys. The tolerant
        # reader takes it (a Tavus identity); the entry is left out, with a warning.
        (b'{"conversation_id": "c", "event_type": "application.transcription_ready",'
         b' "properties": {"transcript": [1]}}', 202),
        # str() of a value nested a thousand deep overflows the stack.
        (b'{"conversation_id": "c", "event_type": ' + DEEP + b"}", 422),
        (b'{"document_id": "d", "status": "processing", "progress": ' + DEEP + b"}", 202),
        # No text column (PostgreSQL's) takes a NUL: such an id is quarantined, not crashed on.
        (b'{"conversation_id": "a\\u0000b", "event_type": "system.shutdown",'
         b' "properties": {"shutdown_reason": "x"}}', 422),
    ],
)  # fmt: skip
def test_what_fuzzing_found(sender, body, status) -> None:
    response = sender.post(body)
    assert response.status_code == status
