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

import functools
import json
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from citywatch.ops.store.cap_references import apply_cap_references, cap_message
from citywatch.ops.store.locks import lock_change_order
from citywatch.ops.store.migrate import migrate
from citywatch.ops.store.schema import AlertRow, AuditRow, IncidentRow
from citywatch.streams.alert import Alert
from citywatch.streams.envelope import uuid5_text
from citywatch.streams.vocabulary import SEVERITY_RANK

_INCIDENT_NAMESPACE = uuid.UUID("a3d0c4a2-6c39-4f1e-b1f4-2f6c0f7f9d51")


CONNECT_TIMEOUT_SECONDS = 5


def shown_url(url: str) -> str:
    """``url`` as it may be printed: any password masked.

    >>> shown_url("postgresql://ops:secret@db/city")
    'postgresql://ops:***@db/city'
    """
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # unparseable: never print what may hold a password
        return url.rsplit("@", 1)[-1] if "@" in url else url


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


_json_encoder = msgspec.json.Encoder()


def json_text(value: Any) -> str:
    """JSON text of a JSON column's value, as ``json.dumps`` writes it once parsed.

    msgspec writes it ~10× faster (JSON columns were a seventh of storing an alert);
    values it would write differently — NaN or infinity (msgspec writes ``null``), keys
    or numbers it cannot write — take ``json.dumps``, as does any text holding
    ``null``.

    >>> json_text({"pm25": 41.5, "tags": ["a"]}), json_text({"v": float("nan")})
    ('{"pm25":41.5,"tags":["a"]}', '{"v": NaN}')
    """
    try:
        raw = _json_encoder.encode(value)
    except (TypeError, ValueError, OverflowError):
        return json.dumps(value)
    return json.dumps(value) if b"null" in raw else raw.decode()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL and a busy timeout for concurrent use."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # a server that does not answer is reported within seconds, not minutes
        waits = {} if "connect_timeout" in parsed.query or parsed.get_backend_name() != \
            "postgresql" else {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        return create_engine(url, pool_pre_ping=True, connect_args=waits,
                             json_serializer=json_text)
    engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=json_text)

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
    return uuid5_text(_INCIDENT_NAMESPACE, key)


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

    def add_alerts(self, alerts: Sequence[Alert], attempts: int = 5) -> int:
        """Store alerts; returns how many were new (see :meth:`add_new_alerts`)."""
        return len(self.add_new_alerts(alerts, attempts))

    def insert_ignoring_duplicates(self, table: type[Any], unique: list[str]) -> Any:
        """An INSERT of ``table`` rows that skips rows whose ``unique`` columns exist."""
        return self._insert(table).on_conflict_do_nothing(index_elements=unique)

    def add_new_alerts(self, alerts: Sequence[Alert], attempts: int = 5,
                       also: Callable[[Connection, list[Alert]], object] | None = None,
                       ) -> set[str]:
        """Store alerts in one transaction; returns the ids that were new (an id already
        stored is skipped, so a replay inserts nothing and routes nothing again).

        Rows are written in id order so concurrent writers take row locks in the same
        order; a deadlock or serialization failure that still happens is retried. Text
        longer than its column is cut with a marker and NUL characters are replaced, so
        every field an envelope can carry fits. ``also(conn, new alerts)`` runs in the
        same transaction (the delivery outbox).
        """
        for attempt in range(attempts):
            try:
                return self._add_alerts(alerts, also)
            except DBAPIError as exc:
                retryable = getattr(exc.orig, "sqlstate", None) in {"40P01", "40001"}
                if not retryable or attempt + 1 == attempts:
                    raise
                time.sleep(0.05 * 2 ** attempt)
        return set()

    def _add_alerts(self, alerts: Sequence[Alert],
                    also: Callable[[Connection, list[Alert]], object] | None) -> set[str]:
        if not alerts:
            return set()
        unique = {a.id: a for a in sorted(alerts, key=lambda a: a.id)}
        incident_of = {a.id: incident_id(a, self.window) for a in unique.values()}
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            self._ensure_incidents(conn, list(unique.values()), incident_of, now)
            rows = [fit_row(AlertRow, _alert_row(a, incident_of[a.id]))
                    for a in unique.values()]
            inserted = conn.execute(
                self.insert_ignoring_duplicates(AlertRow, ["id"])
                .returning(AlertRow.id), rows)
            new = {row.id for row in inserted}
            self._add_to_incidents(conn, [(incident_of[a.id], a) for a in unique.values()
                                          if a.id in new], now)
            apply_cap_references(conn, [a for a in unique.values() if a.id in new], now)
            if also is not None and new:
                also(conn, [a for a in unique.values() if a.id in new])
            return new

    def _ensure_incidents(self, conn: Any, alerts: list[Alert], incident_of: dict[str, str],
                          now: datetime) -> None:
        """Create the incidents these alerts belong to, if they do not exist yet."""
        first_of: dict[str, Alert] = {}
        for a in alerts:
            iid = incident_of[a.id]
            if iid not in first_of or a.event_time < first_of[iid].event_time:
                first_of[iid] = a
        rows = []
        for iid, first in sorted(first_of.items()):
            lon, lat = _alert_point(first)
            rows.append({
                "id": iid, "rule_id": first.rule_id, "domain": first.domain,
                "category": first.category, "title": first.event,
                "scope": incident_scope(first), "zone_layer": first.zone_layer,
                "zone_id": first.zone_id, "zone_name": first.zone_name,
                "severity": first.severity,
                "severity_rank": SEVERITY_RANK.get(first.severity, 0), "status": "new",
                "first_seen": first.event_time, "last_seen": first.event_time,
                "alert_count": 0, "created_at": now, "updated_at": now, "lon": lon,
                "lat": lat, "revision": 0})
        conn.execute(self.insert_ignoring_duplicates(IncidentRow, ["id"]),
                     [fit_row(IncidentRow, row) for row in rows])

    def _add_to_incidents(self, conn: Any, added: list[tuple[str, Alert]],
                          now: datetime) -> int:
        """Add the alerts this transaction inserted to their incidents: count, time span
        and worst severity, under a row lock taken in id order. Incidents that gained
        alerts get a new revision (a resolved one reopens). Returns how many alerts
        were added.

        Only the alerts the insert reported new are added, so a replayed alert changes
        nothing, and two writers racing on one alert add it once (the second one's
        insert does nothing once the first commits). Recounting each incident from the
        alerts table instead cost a scan of all its alerts per batch: a third of a
        worker's time once incidents held thousands of alerts.
        """
        if not added:
            return 0
        table = IncidentRow
        gained: dict[str, list[Alert]] = {}
        for iid, alert in added:
            gained.setdefault(iid, []).append(alert)
        before = {r.id: r for r in conn.execute(
            select(table.id, table.alert_count, table.status, table.revision,
                   table.first_seen, table.last_seen, table.severity_rank)
            .where(table.id.in_(sorted(gained))).order_by(table.id).with_for_update())}
        names = {value: name for name, value in SEVERITY_RANK.items()}
        changes = []
        for iid, alerts in sorted(gained.items()):
            old = before[iid]
            first = min(a.event_time for a in alerts)
            last = max(a.event_time for a in alerts)
            worst = max(SEVERITY_RANK.get(a.severity, 0) for a in alerts)
            if old.alert_count:  # a new incident holds only what it gains here
                first, last = min(first, _utc(old.first_seen)), max(last, _utc(old.last_seen))
                worst = max(worst, old.severity_rank)
            changes.append({
                "b_id": iid, "alert_count": old.alert_count + len(alerts),
                "first_seen": first, "last_seen": last, "severity_rank": worst,
                "severity": names[worst], "revision": old.revision + 1, "updated_at": now,
                "status": "reopened" if old.status == "resolved" else old.status})
        lock_change_order(conn)  # held to the commit: change ids visible in order
        conn.execute(update(table).where(table.id == bindparam("b_id")).values(
            {k: bindparam(k) for k in changes[0] if k != "b_id"}), changes)
        conn.execute(insert(AuditRow), [{
            "at": now, "actor": "pipeline", "action": "alerts_added",
            "entity_type": "incident", "entity_id": c["b_id"],
            "detail": {"alert_count": c["alert_count"], "severity": c["severity"],
                       "status": c["status"], "revision": c["revision"]}}
            for c in changes])
        return len(added)

    def counts(self) -> dict[str, Any]:
        """Totals for summaries: alerts by domain, alerts, incidents."""
        with self.engine.connect() as conn:
            by_domain = dict(conn.execute(
                select(AlertRow.domain, func.count()).group_by(AlertRow.domain)).all())
            incidents = conn.scalar(select(func.count()).select_from(IncidentRow)) or 0
        return {"alerts_by_domain": by_domain, "alerts_total": sum(by_domain.values()),
                "incidents": incidents}


TRUNCATED = "…"


def fit_row(table: type[Any], row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every string fitting its column: NUL characters (which PostgreSQL
    refuses) replaced by U+FFFD, and text longer than a ``String(n)`` column cut to
    ``n`` characters ending in ``…``."""
    limits = _limits(table)
    fitted = {}
    for key, value in row.items():
        if isinstance(value, str):
            if "\x00" in value:
                value = value.replace("\x00", "\ufffd")
            limit = limits.get(key)
            if limit is not None and len(value) > limit:
                value = value[:limit - len(TRUNCATED)] + TRUNCATED
        fitted[key] = value
    return fitted


@functools.cache
def _limits(table: type[Any]) -> dict[str, int]:
    """``String(n)`` column name → n (from the schema, once per table)."""
    return {c.name: c.type.length for c in table.__table__.columns
            if getattr(c.type, "length", None)}


def _utc(value: datetime) -> datetime:
    """Aggregates bypass the column type on SQLite: make them aware UTC again."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


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
        "attributes": alert.attributes, "source_event_ids": alert.source_event_ids,
        "area_circle": list(alert.area_circle) if alert.area_circle else None,
        "source_origins": alert.source_origins or None, "expires_at": alert.expires_at,
        "evaluation": alert.evaluation or None,
        "cap_message": cap_message(alert.attributes) if alert.kind.startswith("cap.") else None}
