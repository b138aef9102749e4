"""What the incident store holds, in a few numbers: incidents by status, alerts, the
newest alert. For ``/metrics`` and ``citywatch status``.

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> store_summary(store)["incidents_by_status"]
    {'new': 0, 'acknowledged': 0, 'resolved': 0, 'reopened': 0}
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from citywatch.ops.store.schema import AlertRow, IncidentRow
from citywatch.ops.store.store import IncidentStore

STATUSES = ("new", "acknowledged", "resolved", "reopened")


def store_summary(store: IncidentStore) -> dict[str, Any]:
    """Incidents by status, alerts by domain and in all, and the newest alert's time."""
    with store.engine.connect() as conn:
        by_status = dict(conn.execute(select(IncidentRow.status, func.count())
                                      .group_by(IncidentRow.status)).all())
        by_domain = dict(conn.execute(select(AlertRow.domain, func.count())
                                      .group_by(AlertRow.domain)).all())
        last = conn.scalar(select(func.max(AlertRow.raised_at)))
    return {"incidents_by_status": {s: by_status.get(s, 0) for s in STATUSES},
            "alerts_by_domain": by_domain, "alerts_total": sum(by_domain.values()),
            "last_alert_at": last}


def console_summary(store: IncidentStore, now: datetime | None = None) -> dict[str, Any]:
    """The console's indicators: open incidents (not resolved) by severity and by
    domain, and alerts raised per hour over the 24 hours up to ``now``."""
    now = now or datetime.now(UTC)
    start = (now - timedelta(hours=23)).replace(minute=0, second=0, microsecond=0)
    open_ = IncidentRow.status != "resolved"
    with store.engine.connect() as conn:
        by_severity = dict(conn.execute(select(IncidentRow.severity, func.count())
                                        .where(open_).group_by(IncidentRow.severity)).all())
        by_domain = dict(conn.execute(select(IncidentRow.domain, func.count())
                                      .where(open_).group_by(IncidentRow.domain)).all())
        raised = conn.execute(select(AlertRow.raised_at).where(
            AlertRow.raised_at >= start)).scalars().all()
    hours = [start + timedelta(hours=h) for h in range(24)]
    counts = [0] * 24
    for moment in raised:
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        slot = int((moment - start).total_seconds() // 3600)
        if 0 <= slot < 24:
            counts[slot] += 1
    return {"open_by_severity": by_severity, "open_by_domain": by_domain,
            "alerts_per_hour": [{"hour": h.isoformat(), "alerts": c}
                                for h, c in zip(hours, counts, strict=True)]}
