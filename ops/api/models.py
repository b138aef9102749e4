"""Typed request and response bodies of the responder API.

Example:
    >>> Assignment(assignee="ana", team="air-quality").team
    'air-quality'
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from citywatch.streams.subscriptions import TEAM_PATTERN, CleanText


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Incident(_FromRow):
    id: str
    rule_id: str
    domain: str
    category: str
    title: str
    scope: str
    zone_layer: str | None
    zone_id: str | None
    zone_name: str | None
    severity: str
    status: str
    first_seen: datetime
    last_seen: datetime
    alert_count: int
    assignee: str | None
    team: str | None
    lon: float | None
    lat: float | None
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    revision: int
    created_at: datetime
    updated_at: datetime


class Alert(_FromRow):
    """An alert with its lineage: source events, rule and model versions."""

    id: str
    incident_id: str
    rule_id: str
    rule_version: str
    model_id: str | None
    model_version: str | None
    domain: str
    kind: str
    category: str
    severity: str
    urgency: str
    certainty: str
    event: str
    message: str
    entity_id: str
    event_time: datetime
    raised_at: datetime
    zone_layer: str | None
    zone_id: str | None
    zone_name: str | None
    geometry: dict[str, Any] | None
    attributes: dict[str, Any]
    source_event_ids: list[str]
    area_circle: list[float] | None = None
    source_origins: list[str] | None = None
    evaluation: dict[str, Any] | None = None


class Note(_FromRow):
    id: int
    author: str
    text: str
    created_at: datetime


class AuditEntry(_FromRow):
    id: int
    at: datetime
    actor: str
    action: str
    detail: dict[str, Any]


class IncidentDetail(BaseModel):
    incident: Incident
    alerts: list[Alert]
    notes: list[Note]
    audit: list[AuditEntry]


class IncidentPage(BaseModel):
    items: list[Incident]
    total: int
    limit: int
    offset: int


class Assignment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: CleanText | None = Field(default=None, max_length=200)
    team: str | None = Field(default=None, pattern=TEAM_PATTERN)


class NoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: CleanText = Field(min_length=1, max_length=10_000)


class DeliveryStatus(_FromRow):
    """One alert owed to a subscription on one channel, and how its delivery went."""

    id: int
    alert_id: str
    channel: Literal["topic", "webhook", "ngsi-ld"]
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class Problem(BaseModel):
    detail: str


class RuleProposalIn(BaseModel):
    """A rule file proposed through the API. Its layer paths resolve against ``layers``
    (file name or relative path → file text), then the live version's layer files of
    the same name."""

    model_config = ConfigDict(extra="forbid")

    rules: CleanText = Field(min_length=1, max_length=1_000_000)
    layers: dict[str, CleanText] = Field(default={}, max_length=20)
    """Each file at most what ``CITYWATCH_API_MAX_RULES_BYTES`` lets the body carry."""


class RuleDecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: CleanText = Field(min_length=1, max_length=2000)


class RuleLayer(_FromRow):
    kind: str
    layer: str
    name: str
    sha256: str


class RuleVersion(BaseModel):
    """A rule-set version: its text, layer files, and where it stands."""

    version: str
    status: Literal["live", "was live", "proposed", "approved", "rejected"]
    content: str
    layers: list[RuleLayer]
    proposed_by: str | None = None
    decided_by: str | None = None
    reason: str | None = None
    findings: list[str] = []


class RuleDiff(BaseModel):
    from_: str | None = Field(alias="from")
    to: str
    added: list[str]
    removed: list[str]
    changed: dict[str, list[str]]
    layers_added: list[str]
    layers_removed: list[str]
    layers_changed: list[str]

    model_config = ConfigDict(populate_by_name=True)


class WorkerRules(_FromRow):
    worker: str
    rules_version: str
    rules_problem: str | None
    seen_at: datetime


class RulesStatus(BaseModel):
    live: str | None
    live_since: datetime | None
    applied_by: str | None
    workers: list[WorkerRules]
    proposed: list[str]


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: CleanText = Field(min_length=1, max_length=200)
    role: Literal["viewer", "operator", "analyst", "admin"]
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class TokenInfo(_FromRow):
    """A token as listed: never its secret or hash."""

    name: str
    role: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class IssuedToken(BaseModel):
    name: str
    role: str
    token: str = Field(description="The secret: shown once, only its hash is stored.")
    expires_at: datetime | None


class FeedUrl(BaseModel):
    feed_url: str = Field(description="The subscription's secret Atom feed URL: shown "
                                      "once, only its key's hash is stored.")


class Health(BaseModel):
    """``status`` is ``ok`` while the store is (the API serves from it alone)."""

    status: Literal["ok", "unavailable"]
    store: str
    broker: str
