"""Hostile input against the console: the read API fuzzed from its own OpenAPI document
(schemathesis), the pages' query strings and forms fuzzed (hypothesis), in process, over a real
redis-server and a SQLite store holding events, alerts and deliveries.

Every answer must be a 2xx, 3xx or 4xx, never a 5xx nor a traceback; and a request that was
refused (4xx) must leave every row of the store and every queue in Redis as they were.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from console import create_app
from schemas.messages import QUEUES
from tests.console_fixtures import (
    BEARER,
    PASSWORD,
    add_event,
    console_settings,
    csrf_of,
    failed_shutdown,
    sign_in,
)
from tests.fuzzing import CONFORMANCE
from workers.store.db import Store
from workers.store.models import AuditEntry, Base, DeliveryStatus, EventStatus, ForwardDelivery

SEEDED = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def store_rows(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order: what a refused request must not change.

    The audit trail is the exception by design: it records refused attempts too (as `refused`,
    `failed` or `nothing`), and those are checked apart, never as a change of the data."""
    with store.session() as session:
        rows = {
            table.name: sorted(map(tuple, session.execute(select(table))), key=repr)
            for table in Base.metadata.sorted_tables
            if table.name != AuditEntry.__tablename__
        }
        done = session.scalars(select(AuditEntry.id).where(AuditEntry.outcome == "done")).all()
        rows["audit (done)"] = sorted(done)
        return rows


def queue_lengths(client: redis.Redis) -> dict[str, int]:
    return {name: client.llen(name) for name in QUEUES}


class Watch:
    """The store and the queues as they were before a request, to compare with after it."""

    def __init__(self, store: Store, client: redis.Redis) -> None:
        self.store = store
        self.client = client
        self.before = self.state()

    def state(self) -> tuple[dict[str, list[tuple[Any, ...]]], dict[str, int]]:
        return store_rows(self.store), queue_lengths(self.client)

    def unchanged(self) -> bool:
        return self.state() == self.before


def check_answer(status: int, body: str, what: object) -> None:
    assert status < 500, (status, what, body[:500])
    assert "Traceback" not in body and "internal_error" not in body, (what, body[:500])


@pytest.fixture
def seeded_store(sqlite_store: Store) -> Store:
    """Events of every status, a failed one to replay, and deliveries, one of them failed."""
    now = datetime.now(UTC)
    for index, status in enumerate((EventStatus.PROCESSED, EventStatus.RECEIVED, "failed")):
        add_event(sqlite_store, now - timedelta(minutes=index), status=status)
    event_id = failed_shutdown(sqlite_store, "c-fuzz")
    with sqlite_store.session() as session:
        for status in (DeliveryStatus.FAILED, DeliveryStatus.DELIVERED):
            session.add(
                ForwardDelivery(
                    event_id=event_id,
                    destination=f"SINK{status}",
                    source="callback",
                    status=status,
                    attempts=3,
                )
            )
    return sqlite_store


@pytest.fixture
def console_app(redis_url: str, seeded_store: Store, tmp_path: Path) -> Any:
    return create_app(console_settings(redis_url, seeded_store.url, tmp_path))


@pytest.fixture
def api_document(console_app: Any) -> Any:
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", console_app)


api_schema = schemathesis.pytest.from_fixture("api_document")


@api_schema.parametrize()
@settings(SEEDED, max_examples=60)
def test_read_api_fuzzed_from_its_openapi_document(
    case: Any, seeded_store: Store, redis_client: redis.Redis
) -> None:
    case.headers = {**(case.headers or {}), **BEARER}
    watch = Watch(seeded_store, redis_client)
    response = case.call()
    check_answer(
        response.status_code,
        response.text,
        (case.method, case.path, case.path_parameters, case.query),
    )
    case.validate_response(
        response,
        checks=CONFORMANCE,
    )
    if response.status_code >= 400 or case.method == "GET":
        assert watch.unchanged(), (case.method, case.path, response.status_code)


# --- the pages --------------------------------------------------------------------------------

PAGES = ("/console/", "/console/events", "/console/conversations", "/console/alerts",
         "/console/deliveries", "/console/login")  # fmt: skip
PARAMETERS = ("q", "kind", "type", "status", "conversation", "resource", "since", "until",
              "limit", "cursor", "severity", "destination", "event", "next")  # fmt: skip
# Text a person or a tool might type, or paste: controls, NUL, surrogates escaped, long runs.
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "0", "-1", "999999999999999999999", "1e400", "NaN", "\x00",
                     "2026-13-45T25:61:00", "2026-11-30T12:00:00", "2026-11-30T12:00:00+25:00",
                     "../../etc/passwd", "<script>alert(1)</script>", "%", "%ff", "' OR 1=1 --",
                     "a" * 5000, "eyJhIjoxfQ", "!!!!", "processed", "failed"]),
)  # fmt: skip
QUERY = st.dictionaries(st.one_of(st.sampled_from(PARAMETERS), st.text(max_size=10)), TEXT)
IDENTIFIER = st.one_of(TEXT.filter(lambda s: "/" not in s and s.strip()), st.uuids().map(str))


@pytest.fixture
def signed_in(console_app: Any) -> Any:
    client = console_app.test_client()
    sign_in(client)
    return client


@given(page=st.sampled_from(PAGES), query=QUERY)
@SEEDED
def test_pages_with_any_query_string(
    signed_in: Any, seeded_store: Store, redis_client: redis.Redis, page: str, query: dict
) -> None:
    watch = Watch(seeded_store, redis_client)
    response = signed_in.get(page, query_string=query)
    check_answer(response.status_code, response.get_data(as_text=True), (page, query))
    assert watch.unchanged(), (page, query)


@given(
    kind=st.sampled_from(["event", "conversation", "replica", "video", "document"]),
    identifier=IDENTIFIER,
)
@SEEDED
def test_record_pages_with_any_id(signed_in: Any, kind: str, identifier: str) -> None:
    path = f"/console/{kind}s/{identifier}"
    response = signed_in.get(path)
    check_answer(response.status_code, response.get_data(as_text=True), path)
    assert response.status_code in (200, 404), (path, response.status_code)


ACTIONS = st.one_of(
    st.builds("/console/events/{}/replay".format, IDENTIFIER),
    st.builds("/console/deliveries/{}/redeliver".format, st.one_of(st.integers(), TEXT)),
    st.builds("/console/alert-deliveries/{}/redeliver".format, st.one_of(st.integers(), TEXT)),
    st.just("/console/deliveries/redeliver"),
    st.just("/console/logout"),
)


@given(path=ACTIONS, form=QUERY, csrf=st.sampled_from(["none", "wrong", "right"]))
@SEEDED
def test_forms_with_any_fields_change_nothing_when_refused(
    console_app: Any,
    seeded_store: Store,
    redis_client: redis.Redis,
    path: str,
    form: dict,
    csrf: str,
) -> None:
    client = console_app.test_client()
    sign_in(client)
    fields = dict(form)
    if csrf == "right":
        fields["csrf_token"] = csrf_of(client.get("/console/events").data)
    elif csrf == "wrong":
        fields["csrf_token"] = "not-the-token"
    watch = Watch(seeded_store, redis_client)
    response = client.post(path, data=fields)
    check_answer(response.status_code, response.get_data(as_text=True), (path, fields))
    if csrf != "right" or response.status_code >= 400:
        assert watch.unchanged(), (path, fields, response.status_code)


@given(form=QUERY, password=st.one_of(TEXT, st.just(PASSWORD)))
@settings(SEEDED, max_examples=100)
def test_login_form_with_any_fields(console_app: Any, form: dict, password: str) -> None:
    client = console_app.test_client()
    token = csrf_of(client.get("/console/login").data)
    response = client.post(
        "/console/login", data={**form, "password": password, "csrf_token": token}
    )
    check_answer(response.status_code, response.get_data(as_text=True), form)
    if response.status_code in (301, 302, 303):
        location = response.headers["Location"]
        assert location.startswith("/console"), location  # never sent off the console
