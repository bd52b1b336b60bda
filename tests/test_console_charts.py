"""The Charts page's reads on both stores: minutes bucketed by the store's own SQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from console import charts
from tests.console_fixtures import add_event
from workers.store.db import Store


def test_events_per_minute_land_in_their_minute_on_either_store(store: Store) -> None:
    now = datetime(2026, 12, 4, 12, 30, 20, tzinfo=UTC)
    for moment, status in (
        (now - timedelta(seconds=10), "processed"),  # this minute: the last bucket
        (now - timedelta(minutes=2, seconds=5), "failed"),
        (now - timedelta(minutes=2, seconds=15), "failed"),
        (now - timedelta(hours=23, minutes=59), "processed"),  # the first bucket
        (now - timedelta(hours=25), "processed"),  # outside
    ):
        add_event(store, moment, status=status)
    with store.session() as session:
        series = {s.name: s for s in charts.events_per_minute(session, now)}
    assert sorted(series) == ["failed", "processed"]
    assert series["processed"].counts[-1] == 1 and series["processed"].counts[0] == 1
    assert series["processed"].total == 2
    assert series["failed"].counts[-3] == 2 and series["failed"].total == 2
    assert len(series["failed"].counts) == charts.MINUTES
