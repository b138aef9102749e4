"""Team subscriptions as the stream layer routes by them: a filter over alerts (zones,
domains, categories, minimum severity) plus an optional webhook. The store keeps them
(``citywatch.ops.store.subscriptions``); the worker matches alerts against them.

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

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AnyHttpUrl, BaseModel, ConfigDict, Field

from citywatch.streams.envelope import Domain
from citywatch.streams.vocabulary import SEVERITY_RANK, Category, Severity

TEAM_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"


MAX_ZONES = 1000


def _clean(value: str) -> str:
    """Refuse what no store or XML export can carry: NUL and lone surrogates."""
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise ValueError("lone surrogates (invalid Unicode) are not allowed")
    return value


CleanText = Annotated[str, AfterValidator(_clean)]
ZoneRef = Annotated[CleanText, Field(min_length=1, max_length=200)]


class SubscriptionFilter(BaseModel):
    """Which alerts a team wants; an empty list means "any"."""

    model_config = ConfigDict(extra="forbid")

    zones: list[ZoneRef] = Field(default=[], max_length=MAX_ZONES,
                                 description="zone ids or names")
    domains: list[Domain] = Field(default=[], max_length=10)
    categories: list[Category] = Field(default=[], max_length=20)
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
    ngsi_ld_url: AnyHttpUrl | None = None
    """An NGSI-LD context broker (its base URL): each alert is upserted there as a FIWARE
    ``Alert`` entity, with the webhooks' retries and destination checks."""
    active: bool = True


class Subscription(SubscriptionIn):
    """A stored subscription with its delivery health."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    failures: int = 0
    last_error: str | None = None
    created_at: datetime
    updated_at: datetime


def matching(subscriptions: Sequence[Subscription], alert: Any) -> list[Subscription]:
    """The active subscriptions an alert matches."""
    return [s for s in subscriptions if s.active and s.matches(
        domain=alert.domain, category=alert.category, severity=alert.severity,
        zone_id=alert.zone_id, zone_name=alert.zone_name)]
