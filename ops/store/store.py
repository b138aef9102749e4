"""The incident store: idempotent, batched alert upserts that open or update incidents.

Example:
    >>> store = IncidentStore("sqlite://")
    >>> store.create_schema()
    >>> store.add_alerts([])
    0
    >>> store.counts()["alerts_total"]
    0
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, case, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url

from citywatch.ops.store.migrate import migrate
from citywatch.ops.store.schema import AlertRow, IncidentRow
from citywatch.rules.alert import Alert
from citywatch.rules.model import SEVERITY_RANK

_INCIDENT_NAMESPACE = uuid.UUID("a3d0c4a2-6c39-4f1e-b1f4-2f6c0f7f9d51")


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL and a busy timeout for concurrent use."""
    url = normalise_url(url)
    if make_url(url).get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def incident_scope(alert: Alert) -> str:
    """What an incident is about: the alert's zone, or its entity when it has none."""
    if alert.zone_id is not None:
        return f"zone:{alert.zone_layer}:{alert.zone_id}"
    return f"entity:{alert.entity_id}"


def incident_id(alert: Alert, window: timedelta) -> str:
    """Deterministic incident id: rule + scope + correlation window containing the alert."""
    seconds = int(window.total_seconds())
    bucket = int(alert.event_time.timestamp()) // seconds * seconds
    key = f"{alert.rule_id}\x1f{incident_scope(alert)}\x1f{bucket}"
    return str(uuid.uuid5(_INCIDENT_NAMESPACE, key))


class IncidentStore:
    """SQLAlchemy-backed store; the same code runs on SQLite and PostgreSQL.

    ``add_alerts`` is idempotent: an alert id already stored is skipped, and only new
    alerts count towards their incident.
    """

    def __init__(self, url: str, *, correlation_window: timedelta = timedelta(hours=24)):
        self.url = normalise_url(url)
        self.engine = make_engine(url)
        self.window = correlation_window
        self._insert = (postgresql.insert if self.engine.dialect.name == "postgresql"
                        else sqlite.insert)

    def create_schema(self) -> None:
        """Bring the database to the newest schema (Alembic ``upgrade head``)."""
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def add_alerts(self, alerts: Sequence[Alert]) -> int:
        """Store alerts; returns how many were new."""
        if not alerts:
            return 0
        unique = {a.id: a for a in alerts}
        incident_of = {a.id: incident_id(a, self.window) for a in unique.values()}
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            self._upsert_incidents(conn, list(unique.values()), incident_of, now, count=False)
            rows = [_alert_row(a, incident_of[a.id]) for a in unique.values()]
            stmt = self._insert(AlertRow).on_conflict_do_nothing(index_elements=["id"])
            new_ids = set(conn.scalars(stmt.returning(AlertRow.id), rows))
            fresh = [unique[i] for i in new_ids]
            self._upsert_incidents(conn, fresh, incident_of, now, count=True)
        return len(new_ids)

    def _upsert_incidents(self, conn: Any, alerts: list[Alert], incident_of: dict[str, str],
                          now: datetime, *, count: bool) -> None:
        """Make sure each incident exists (``count=False``), or add alerts to it."""
        groups: dict[str, list[Alert]] = defaultdict(list)
        for a in alerts:
            groups[incident_of[a.id]].append(a)
        if not groups:
            return
        rows = []
        for iid, members in groups.items():
            worst = max(members, key=lambda a: SEVERITY_RANK.get(a.severity, 0))
            first = min(members, key=lambda a: a.event_time)
            lon, lat = _alert_point(first)
            rows.append({
                "id": iid, "rule_id": first.rule_id, "domain": first.domain,
                "category": first.category, "title": first.event,
                "scope": incident_scope(first), "zone_layer": first.zone_layer,
                "zone_id": first.zone_id, "zone_name": first.zone_name,
                "severity": worst.severity,
                "severity_rank": SEVERITY_RANK.get(worst.severity, 0), "status": "new",
                "first_seen": first.event_time,
                "last_seen": max(a.event_time for a in members),
                "alert_count": len(members) if count else 0,
                "created_at": now, "updated_at": now, "lon": lon, "lat": lat, "revision": 0})
        stmt = self._insert(IncidentRow)
        if not count:
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["id"]), rows)
            return
        table, new = IncidentRow.__table__.c, stmt.excluded
        conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_={
            "alert_count": table.alert_count + new.alert_count,
            "severity": case((new.severity_rank > table.severity_rank, new.severity),
                             else_=table.severity),
            "severity_rank": case((new.severity_rank > table.severity_rank,
                                   new.severity_rank), else_=table.severity_rank),
            "first_seen": case((new.first_seen < table.first_seen, new.first_seen),
                               else_=table.first_seen),
            "last_seen": case((new.last_seen > table.last_seen, new.last_seen),
                              else_=table.last_seen),
            "updated_at": new.updated_at,
            "revision": table.revision + 1,
            # a new alert on a resolved incident reopens it
            "status": case((table.status == "resolved", "reopened"), else_=table.status),
        }), rows)

    def counts(self) -> dict[str, Any]:
        """Totals for summaries: alerts by domain, alerts, incidents."""
        with self.engine.connect() as conn:
            by_domain = dict(conn.execute(
                select(AlertRow.domain, func.count()).group_by(AlertRow.domain)).all())
            incidents = conn.scalar(select(func.count()).select_from(IncidentRow)) or 0
        return {"alerts_by_domain": by_domain, "alerts_total": sum(by_domain.values()),
                "incidents": incidents}


def _alert_point(alert: Alert) -> tuple[float | None, float | None]:
    geometry = alert.geometry
    if geometry and geometry.get("type") == "Point":
        return float(geometry["coordinates"][0]), float(geometry["coordinates"][1])
    return None, None


def _alert_row(alert: Alert, incident: str) -> dict[str, Any]:
    return {
        "id": alert.id, "incident_id": incident, "rule_id": alert.rule_id,
        "rule_version": alert.rule_version, "model_id": alert.model_id,
        "model_version": alert.model_version, "domain": alert.domain, "kind": alert.kind,
        "category": alert.category, "severity": alert.severity, "urgency": alert.urgency,
        "certainty": alert.certainty, "event": alert.event, "message": alert.message,
        "entity_id": alert.entity_id, "event_time": alert.event_time,
        "raised_at": alert.raised_at, "zone_layer": alert.zone_layer,
        "zone_id": alert.zone_id, "zone_name": alert.zone_name, "geometry": alert.geometry,
        "attributes": alert.attributes, "source_event_ids": alert.source_event_ids}
