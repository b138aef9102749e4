"""Team subscriptions in the incident store: CRUD, audited, and delivery health.
The subscription models and the matching live in ``citywatch.streams.subscriptions``.

Example:
    >>> store = IncidentStore("sqlite://")
    >>> store.create_schema()
    >>> book = SubscriptionBook(store)
    >>> book.create(SubscriptionIn(team="air", domains=["environment"]), actor="me").team
    'air'
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update

from citywatch.ops.store.lifecycle import audit
from citywatch.ops.store.schema import SubscriptionRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.tokens import token_hash
from citywatch.streams.subscriptions import Subscription, SubscriptionIn


def _values(data: SubscriptionIn) -> dict[str, Any]:
    values = data.model_dump(mode="json")
    return values


class SubscriptionBook:
    """CRUD for subscriptions; every change is audited."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def list(self, team: str | None = None, active_only: bool = False) -> list[Subscription]:
        query = select(SubscriptionRow).order_by(SubscriptionRow.team, SubscriptionRow.id)
        if team is not None:
            query = query.where(SubscriptionRow.team == team)
        if active_only:
            query = query.where(SubscriptionRow.active.is_(True))
        with self.store.engine.connect() as conn:
            return [Subscription.model_validate(r) for r in conn.execute(query).all()]

    def get(self, subscription_id: str) -> Subscription | None:
        with self.store.engine.connect() as conn:
            row = conn.execute(select(SubscriptionRow)
                               .where(SubscriptionRow.id == subscription_id)).one_or_none()
        return Subscription.model_validate(row) if row is not None else None

    def create(self, data: SubscriptionIn, *, actor: str) -> Subscription:
        now = datetime.now(UTC)
        sid = str(uuid.uuid4())
        with self.store.engine.begin() as conn:
            conn.execute(SubscriptionRow.__table__.insert().values(
                id=sid, failures=0, last_error=None, created_at=now, updated_at=now,
                **_values(data)))
            audit(conn, actor=actor, action="create", entity_type="subscription",
                  entity_id=sid, detail=_values(data))
        created = self.get(sid)
        assert created is not None
        return created

    def replace(self, subscription_id: str, data: SubscriptionIn, *,
                actor: str) -> Subscription | None:
        with self.store.engine.begin() as conn:
            done = conn.execute(update(SubscriptionRow)
                                .where(SubscriptionRow.id == subscription_id)
                                .values(updated_at=datetime.now(UTC), **_values(data)))
            if not done.rowcount:
                return None
            audit(conn, actor=actor, action="update", entity_type="subscription",
                  entity_id=subscription_id, detail=_values(data))
        return self.get(subscription_id)

    def issue_feed_key(self, subscription_id: str, *, actor: str) -> str | None:
        """A new secret for the subscription's feed URL (any earlier one stops working);
        only its hash is kept. ``None``: no such subscription."""
        secret = secrets.token_urlsafe(24)
        with self.store.engine.begin() as conn:
            done = conn.execute(update(SubscriptionRow)
                                .where(SubscriptionRow.id == subscription_id)
                                .values(feed_key_hash=token_hash(secret)))
            if not done.rowcount:
                return None
            audit(conn, actor=actor, action="issue_feed_key", entity_type="subscription",
                  entity_id=subscription_id, detail={})
        return secret

    def revoke_feed_key(self, subscription_id: str, *, actor: str) -> bool:
        """The feed URL stops working; False when there was none."""
        with self.store.engine.begin() as conn:
            done = conn.execute(update(SubscriptionRow)
                                .where(SubscriptionRow.id == subscription_id,
                                       SubscriptionRow.feed_key_hash.is_not(None))
                                .values(feed_key_hash=None))
            if not done.rowcount:
                return False
            audit(conn, actor=actor, action="revoke_feed_key", entity_type="subscription",
                  entity_id=subscription_id, detail={})
        return True

    def by_feed_key(self, secret: str) -> Subscription | None:
        """The active subscription whose feed URL carries ``secret``."""
        with self.store.engine.connect() as conn:
            row = conn.execute(select(SubscriptionRow).where(
                SubscriptionRow.feed_key_hash == token_hash(secret),
                SubscriptionRow.active.is_(True))).one_or_none()
        return Subscription.model_validate(row) if row is not None else None

    def delete(self, subscription_id: str, *, actor: str) -> bool:
        with self.store.engine.begin() as conn:
            done = conn.execute(delete(SubscriptionRow)
                                .where(SubscriptionRow.id == subscription_id))
            if not done.rowcount:
                return False
            audit(conn, actor=actor, action="delete", entity_type="subscription",
                  entity_id=subscription_id, detail={})
        return True
