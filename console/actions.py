"""What a person can do from the console besides reading: redeliver, erase.

(Replaying an event is ``workers/replay.py``'s.) A redelivery is reset and its task sent inside
one transaction, as a replay is: a worker taking the task waits for the row, so it always sees
the reset, and a broker that cannot take the task leaves the delivery as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schemas.messages import DELIVER_ALERT
from schemas.settings import Settings
from workers.store.models import Alert, AlertDelivery, DeliveryStatus, ForwardDelivery

Send = Callable[[str, list[Any]], None]


def redeliver_alert(session: Session, delivery_id: int, send: Send) -> bool:
    """One more attempt at a failed alert delivery; False unless it exists and failed.

    Its attempt count goes on (attempts are numbered per delivery), so this is one more try,
    not a fresh series: a channel still down fails it again, with the new error recorded.
    """
    query = (
        select(AlertDelivery, Alert)
        .join(Alert, Alert.id == AlertDelivery.alert_id)
        .where(AlertDelivery.id == delivery_id)
        .with_for_update(of=AlertDelivery)
    )
    row = session.execute(query).first()
    if row is None or row[0].status != DeliveryStatus.FAILED:
        return False
    delivery, alert = row
    delivery.status = DeliveryStatus.PENDING
    send(DELIVER_ALERT, [alert.cause_key, delivery.channel])
    return True


def failed_alert_deliveries(session: Session, limit: int) -> list[int]:
    query = (
        select(AlertDelivery.id)
        .where(AlertDelivery.status == DeliveryStatus.FAILED)
        .order_by(AlertDelivery.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def redeliver(session: Session, settings: Settings, delivery_id: int, send: Send) -> bool:
    """Another round for one delivery to a destination (``workers.forwarding.redeliver``, as
    ``tavus-callbacks redeliver`` does); False if there is no such delivery."""
    from workers import forwarding  # the destinations, loaded only when a person redelivers

    delivery = session.get(ForwardDelivery, delivery_id)
    if delivery is None:
        return False
    tasks = forwarding.redeliver(session, settings, delivery.event_id, delivery.destination)
    for task in tasks:
        send(task["name"], task["args"])
    return bool(tasks)


def redeliver_failed(session: Session, settings: Settings, send: Send) -> int:
    """Bulk Redeliver: every failed delivery to a destination, one transaction."""
    from workers import forwarding  # as in ``redeliver``

    tasks = forwarding.redeliver(session, settings, failed=True)
    for task in tasks:
        send(task["name"], task["args"])
    return len(tasks)


def erase(console: Any, kind: str, target_id: str, actor: str) -> dict[str, Any]:
    """Erase one conversation, replica, video or document (``workers.lifecycle.erase``): the
    store, the queues, this host's spool; what was erased, as JSON."""
    from workers import lifecycle  # loaded only when a person erases

    target = lifecycle.Target(kind, target_id)
    store, settings = console.store, console.settings
    return lifecycle.erase(store, target, actor, console.redis, settings.spool_dir).as_json()
