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
    channel: Literal["topic", "webhook"]
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class Problem(BaseModel):
    detail: str
