"""What the incident store holds, in a few numbers: incidents by status, alerts, the
newest alert. For ``/metrics`` and ``citywatch status``.

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> store_summary(store)["incidents_by_status"]
    {'new': 0, 'acknowledged': 0, 'resolved': 0, 'reopened': 0}
"""

from __future__ import annotations

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
