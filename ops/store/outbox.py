"""The delivery outbox in the incident store (the worker's ``DeliveryQueue``).

:meth:`Outbox.enqueue` runs inside the transaction that stores new alerts: every active
subscription an alert matches is owed it on its team topic and, when it has them, its
webhook and its NGSI-LD context broker (the alert as a FIWARE ``Alert`` entity, upserted)
— once per (subscription, alert, channel), whatever replays or restarts happen.

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> outbox = Outbox(store)
    >>> outbox.claim(10, lease_seconds=60, exclude=())
    []
    >>> outbox.due()
    0
    >>> outbox.list("no-such-subscription")
    []
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, or_, select, update

from citywatch.ops.ngsi_alert import upsert_body
from citywatch.ops.store.schema import DeliveryRow, SubscriptionRow
from citywatch.ops.store.store import IncidentStore
from citywatch.streams.alert import Alert, encode_alert
from citywatch.streams.routing import Delivery
from citywatch.streams.subscriptions import Subscription, matching

HTTP_CHANNELS = ("webhook", "ngsi-ld")
UPSERT_PATH = "/ngsi-ld/v1/entityOperations/upsert"


def _destination(subscription: Any, channel: str) -> str | None:
    """Where a delivery goes now (None: the subscription no longer has that channel)."""
    if subscription is None:
        return None
    if channel == "ngsi-ld":
        base = subscription.ngsi_ld_url
        return f"{base.rstrip('/')}{UPSERT_PATH}" if base else None
    return subscription.webhook_url


class Outbox:
    """Deliveries owed to subscriptions, kept in the store until done or finally failed.

    Example:
        >>> store = IncidentStore("sqlite://"); store.create_schema()
        >>> Outbox(store).due()     # nothing owed to anyone yet
        0
    """

    def __init__(self, store: IncidentStore) -> None:
        self.store = store
        self._insert = store.insert_ignoring_duplicates

    def enqueue(self, conn: Connection, alerts: Sequence[Alert]) -> int:
        """Owe ``alerts`` (new to the store) to every active subscription they match, in
        the caller's transaction; returns how many deliveries were added."""
        if not alerts:
            return 0
        subscriptions = [Subscription.model_validate(row) for row in conn.execute(
            select(SubscriptionRow).where(SubscriptionRow.active.is_(True))).all()]
        now = datetime.now(UTC)
        rows = []
        for alert in alerts:
            payload = encode_alert(alert).decode()
            for sub in matching(subscriptions, alert):
                channels = [("topic", payload)] + (
                    [("webhook", payload)] if sub.webhook_url else []) + (
                    [("ngsi-ld", upsert_body(alert))] if sub.ngsi_ld_url else [])
                rows += [{"subscription_id": sub.id, "team": sub.team, "alert_id": alert.id,
                          "channel": channel, "payload": body, "status": "pending",
                          "attempts": 0, "next_attempt_at": now, "created_at": now,
                          "updated_at": now} for channel, body in channels]
        if rows:
            conn.execute(self._insert(DeliveryRow, ["subscription_id", "alert_id", "channel"]),
                         rows)
        return len(rows)

    def claim(self, limit: int, lease_seconds: float, exclude: Collection[int],
              busy: Collection[str] = (), per_webhook: int = 10) -> list[Delivery]:
        """Pending deliveries that are due and not leased, leased for ``lease_seconds``
        (a worker that dies holding them frees them when the lease ends). Webhooks: at
        most ``per_webhook`` per subscription, none for the ``busy`` ones (still sending
        what they were given), so what a worker holds is sent well within its lease and
        never claimed by a second worker meanwhile."""
        now = datetime.now(UTC)
        d = DeliveryRow
        free = or_(d.claimed_until.is_(None), d.claimed_until < now)
        webhook_busy = d.channel.in_(HTTP_CHANNELS) & d.subscription_id.in_(list(busy))
        ranked = (select(d.id, d.channel, func.row_number().over(
            partition_by=(d.subscription_id, d.channel), order_by=d.id).label("n"))
            .where(d.status == "pending", d.next_attempt_at <= now, free,
                   d.id.not_in(list(exclude)) if exclude else True,
                   ~webhook_busy if busy else True)
            .subquery())
        with self.store.engine.begin() as conn:
            ids = list(conn.execute(
                select(ranked.c.id)
                .where(or_(ranked.c.channel == "topic", ranked.c.n <= per_webhook))
                .order_by(ranked.c.id).limit(limit)).scalars())
            if not ids:
                return []
            # the lease is taken by a conditional update: of two workers claiming the
            # same rows, the second finds them leased (re-checked under the row lock)
            claimed = conn.execute(
                update(d).where(d.id.in_(ids), free)
                .values(claimed_until=now + timedelta(seconds=lease_seconds))
                .returning(d.id, d.subscription_id, d.team, d.alert_id, d.channel,
                           d.payload, d.attempts)).all()
            urls = {row.id: row for row in conn.execute(
                select(SubscriptionRow.id, SubscriptionRow.webhook_url,
                       SubscriptionRow.ngsi_ld_url)
                .where(SubscriptionRow.id.in_({r.subscription_id for r in claimed}))).all()}
        return sorted((Delivery(id=r.id, subscription_id=r.subscription_id, team=r.team,
                                alert_id=r.alert_id, channel=r.channel,
                                payload=r.payload.encode(), attempts=r.attempts,
                                url=_destination(urls.get(r.subscription_id), r.channel))
                       for r in claimed), key=lambda delivery: delivery.id)

    def due(self) -> int:
        """How many deliveries are pending and due now."""
        d = DeliveryRow
        with self.store.engine.connect() as conn:
            return conn.scalar(select(func.count()).select_from(d).where(
                d.status == "pending", d.next_attempt_at <= datetime.now(UTC))) or 0

    def delivered(self, ids: Collection[int]) -> None:
        if not ids:
            return
        now = datetime.now(UTC)
        with self.store.engine.begin() as conn:
            conn.execute(update(DeliveryRow).where(DeliveryRow.id.in_(list(ids)))
                         .values(status="delivered", claimed_until=None, updated_at=now))

    def attempt_failed(self, delivery: Delivery, error: str, retry_in: float | None,
                       ) -> None:
        """Count the failed attempt: retry after ``retry_in`` seconds, or (None) mark the
        delivery failed for good. The subscription's failure count and last error show
        it too."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {"attempts": delivery.attempts + 1, "last_error": error,
                                  "claimed_until": None, "updated_at": now}
        if retry_in is None:
            values["status"] = "failed"
        else:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in)
        with self.store.engine.begin() as conn:
            conn.execute(update(DeliveryRow).where(DeliveryRow.id == delivery.id)
                         .values(**values))
            conn.execute(update(SubscriptionRow)
                         .where(SubscriptionRow.id == delivery.subscription_id)
                         .values(failures=SubscriptionRow.failures + 1, last_error=error))

    def list(self, subscription_id: str, status: str | None = None, limit: int = 100,
             ) -> list[Any]:
        """A subscription's deliveries, newest first (``status`` e.g. ``failed``)."""
        d = DeliveryRow
        query = select(d.id, d.alert_id, d.channel, d.status, d.attempts, d.last_error,
                       d.created_at, d.updated_at).where(d.subscription_id == subscription_id)
        if status is not None:
            query = query.where(d.status == status)
        with self.store.engine.connect() as conn:
            return list(conn.execute(query.order_by(d.id.desc()).limit(limit)).all())
