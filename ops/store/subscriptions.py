"""Team subscriptions: a filter over alerts (zones, domains, categories, minimum severity)
plus an optional webhook. Stored in the incident store; matched in the stream.

Example:
    >>> f = SubscriptionFilter(domains=["environment"], min_severity="Moderate")
    >>> f.matches(domain="environment", category="Health", severity="Severe",
    ...           zone_id="2", zone_name="Bronx")
    True
    >>> f.matches(domain="traffic", category="Transport", severity="Severe",
    ...           zone_id=None, zone_name=None)
    False
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field
from sqlalchemy import delete, select, update

from citywatch.ops.store.lifecycle import audit
from citywatch.ops.store.schema import SubscriptionRow
from citywatch.ops.store.store import IncidentStore
from citywatch.rules.model import SEVERITY_RANK, Category, Severity
from citywatch.streams.envelope import Domain

TEAM_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


CleanText = Annotated[str, AfterValidator(_no_nul)]


class SubscriptionFilter(BaseModel):
    """Which alerts a team wants; an empty list means "any"."""

    model_config = ConfigDict(extra="forbid")

    zones: list[CleanText] = Field(default=[], description="zone ids or names")
    domains: list[Domain] = []
    categories: list[Category] = []
    min_severity: Severity = "Unknown"

    def matches(self, *, domain: str, category: str, severity: str, zone_id: str | None,
                zone_name: str | None) -> bool:
        if self.domains and domain not in self.domains:
            return False
        if self.categories and category not in self.categories:
            return False
        if SEVERITY_RANK.get(severity, 0) < SEVERITY_RANK[self.min_severity]:
            return False
        return not self.zones or zone_id in self.zones or zone_name in self.zones


class SubscriptionIn(SubscriptionFilter):
    """A subscription as created or replaced through the API."""

    team: str = Field(pattern=TEAM_PATTERN)
    webhook_url: AnyHttpUrl | None = None
    active: bool = True


class Subscription(SubscriptionIn):
    """A stored subscription with its delivery health."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    failures: int = 0
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime


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

    def delete(self, subscription_id: str, *, actor: str) -> bool:
        with self.store.engine.begin() as conn:
            done = conn.execute(delete(SubscriptionRow)
                                .where(SubscriptionRow.id == subscription_id))
            if not done.rowcount:
                return False
            audit(conn, actor=actor, action="delete", entity_type="subscription",
                  entity_id=subscription_id, detail={})
        return True

    def record_delivery(self, subscription_id: str, error: str | None) -> None:
        """Count a failed webhook delivery (or clear the last error after a success)."""
        table = SubscriptionRow
        values: dict[str, Any] = ({"failures": table.failures + 1, "last_error": error}
                                  if error else {"last_error": None})
        with self.store.engine.begin() as conn:
            conn.execute(update(table).where(table.id == subscription_id).values(**values))


def matching(subscriptions: Sequence[Subscription], alert: Any) -> list[Subscription]:
    """The active subscriptions an alert matches."""
    return [s for s in subscriptions if s.active and s.matches(
        domain=alert.domain, category=alert.category, severity=alert.severity,
        zone_id=alert.zone_id, zone_name=alert.zone_name)]
