"""Read side of the incident store: filtered, paginated incident lists and details.

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> list_incidents(store, IncidentFilter(status=["new"]))
    ([], 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import Select, func, or_, select

from citywatch.ops.store.schema import AlertRow, AuditRow, IncidentNoteRow, IncidentRow
from citywatch.ops.store.store import IncidentStore
from citywatch.streams.envelope import Domain
from citywatch.streams.vocabulary import SEVERITY_RANK, Severity

Status = Literal["new", "acknowledged", "resolved", "reopened"]


class IncidentFilter(BaseModel):
    """What to list; every field is optional and they combine with AND."""

    status: list[Status] | None = None
    min_severity: Severity | None = None
    domain: list[Domain] | None = None
    zone: list[str] | None = Field(default=None, description="zone ids or names")
    bbox: tuple[float, float, float, float] | None = Field(
        default=None, description="min_lon, min_lat, max_lon, max_lat")
    since: datetime | None = Field(default=None, description="last seen at or after")
    until: datetime | None = Field(default=None, description="first seen at or before")
    limit: int = Field(default=50, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("bbox")
    @classmethod
    def _ordered(cls, value: tuple[float, float, float, float] | None,
                 ) -> tuple[float, float, float, float] | None:
        if value is not None:
            min_lon, min_lat, max_lon, max_lat = value
            if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
                raise ValueError("bbox must be min_lon,min_lat,max_lon,max_lat within range")
        return value


def apply_filter(query: Select[Any], f: IncidentFilter) -> Select[Any]:
    c = IncidentRow
    if f.status:
        query = query.where(c.status.in_(f.status))
    if f.min_severity:
        query = query.where(c.severity_rank >= SEVERITY_RANK[f.min_severity])
    if f.domain:
        query = query.where(c.domain.in_(f.domain))
    if f.zone:
        query = query.where(or_(c.zone_id.in_(f.zone), func.lower(c.zone_name).in_(
            [z.lower() for z in f.zone])))
    if f.bbox:
        min_lon, min_lat, max_lon, max_lat = f.bbox
        query = query.where(c.lon.between(min_lon, max_lon), c.lat.between(min_lat, max_lat))
    if f.since:
        query = query.where(c.last_seen >= f.since)
    if f.until:
        query = query.where(c.first_seen <= f.until)
    return query


def list_incidents(store: IncidentStore, f: IncidentFilter) -> tuple[Sequence[Any], int]:
    """One page of incidents (most recently seen first) and the total matching."""
    with store.engine.connect() as conn:
        total = conn.scalar(apply_filter(select(func.count()).select_from(IncidentRow), f)) or 0
        rows = conn.execute(apply_filter(select(IncidentRow), f)
                            .order_by(IncidentRow.last_seen.desc(), IncidentRow.id)
                            .limit(f.limit).offset(f.offset)).all()
    return rows, total


def get_incident(store: IncidentStore, incident_id: str) -> dict[str, Any] | None:
    """An incident with its alerts (lineage), notes and audit trail."""
    with store.engine.connect() as conn:
        incident = conn.execute(select(IncidentRow).where(IncidentRow.id == incident_id)
                                ).one_or_none()
        if incident is None:
            return None
        alerts = conn.execute(select(AlertRow).where(AlertRow.incident_id == incident_id)
                              .order_by(AlertRow.event_time, AlertRow.id)).all()
        notes = conn.execute(select(IncidentNoteRow)
                             .where(IncidentNoteRow.incident_id == incident_id)
                             .order_by(IncidentNoteRow.id)).all()
        trail = conn.execute(select(AuditRow).where(AuditRow.entity_type == "incident",
                                                    AuditRow.entity_id == incident_id)
                             .order_by(AuditRow.id)).all()
    return {"incident": incident, "alerts": alerts, "notes": notes, "audit": trail}


def get_alert(store: IncidentStore, alert_id: str) -> Any | None:
    with store.engine.connect() as conn:
        return conn.execute(select(AlertRow).where(AlertRow.id == alert_id)).one_or_none()


def recent_alerts(store: IncidentStore, *, domains: list[str] | None = None,
                  categories: list[str] | None = None, zones: list[str] | None = None,
                  min_severity: str = "Unknown", limit: int = 100) -> Sequence[Any]:
    """Newest alerts matching a subscription-style filter (for Atom feeds)."""
    query = select(AlertRow)
    if domains:
        query = query.where(AlertRow.domain.in_(domains))
    if categories:
        query = query.where(AlertRow.category.in_(categories))
    if zones:
        query = query.where(or_(AlertRow.zone_id.in_(zones), AlertRow.zone_name.in_(zones)))
    allowed = [s for s, rank in SEVERITY_RANK.items() if rank >= SEVERITY_RANK[min_severity]]
    query = query.where(AlertRow.severity.in_(allowed))
    with store.engine.connect() as conn:
        return conn.execute(query.order_by(AlertRow.raised_at.desc(), AlertRow.id)
                            .limit(limit)).all()


class AmbiguousPrefix(LookupError):
    """More than one id starts with the prefix given."""


def resolve_prefix(store: IncidentStore, column: Any, prefix: str,
                   noun: str = "incident") -> str | None:
    """The one value of ``column`` (an id) starting with ``prefix``, like git's
    abbreviated commits; ``None`` when none does; :class:`AmbiguousPrefix` naming the
    first few when several do."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    with store.engine.connect() as conn:
        found = conn.scalars(select(column).where(column.like(f"{escaped}%", escape="\\"))
                             .order_by(column).limit(6)).all()
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise AmbiguousPrefix(f"'{prefix}' is the start of several {noun} ids: {shown}")
    return found[0] if found else None


def latest_messages(store: IncidentStore, incident_ids: Sequence[str]) -> dict[str, str]:
    """The message of each incident's newest alert (what it is about: magnitude, place,
    reading), by incident id."""
    if not incident_ids:
        return {}
    newest = (select(AlertRow.incident_id, func.max(AlertRow.event_time).label("at"))
              .where(AlertRow.incident_id.in_(incident_ids))
              .group_by(AlertRow.incident_id).subquery())
    query = (select(AlertRow.incident_id, AlertRow.message)
             .join(newest, (AlertRow.incident_id == newest.c.incident_id)
                   & (AlertRow.event_time == newest.c.at))
             .order_by(AlertRow.incident_id, AlertRow.id.desc()))
    with store.engine.connect() as conn:
        return {incident: message for incident, message in conn.execute(query).all()}
