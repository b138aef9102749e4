"""Incident changes in commit order, for streaming (``/stream``, ``Last-Event-ID``).

Every change to an incident (created or gained alerts, acknowledged, resolved, reopened,
assigned, noted) appends one ``audit_log`` row in the same transaction. Its id is the
change id: writers take :func:`~citywatch.ops.store.locks.lock_change_order` before
they append, and hold it until
they commit, so change ids become visible in increasing order — a reader that has seen
change ``n`` has seen every change before it, and resuming "after ``n``" never skips or
repeats one (equal timestamps do not matter).

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> last_change_id(store)
    0
    >>> incident_changes(store, after=0, f=IncidentFilter())
    (0, [])
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from citywatch.ops.store.queries import IncidentFilter, apply_filter
from citywatch.ops.store.schema import AuditRow, IncidentRow
from citywatch.ops.store.store import IncidentStore


def last_change_id(store: IncidentStore) -> int:
    """The newest incident change id (0 when there is none)."""
    with store.engine.connect() as conn:
        return conn.scalar(select(func.max(AuditRow.id))
                           .where(AuditRow.entity_type == "incident")) or 0


def incident_changes(store: IncidentStore, *, after: int, f: IncidentFilter,
                     limit: int = 500) -> tuple[int, list[tuple[int, Any]]]:
    """The next ``limit`` incident changes after change id ``after``: ``(cursor,
    [(change id, incident row)])`` with the incidents matching ``f`` (as they are now),
    oldest change first; ``cursor`` is the last change id looked at, matching or not."""
    with store.engine.connect() as conn:
        ids = conn.execute(select(AuditRow.id, AuditRow.entity_id)
                           .where(AuditRow.entity_type == "incident", AuditRow.id > after)
                           .order_by(AuditRow.id).limit(limit)).all()
        if not ids:
            return after, []
        incidents = {row.id: row for row in conn.execute(
            apply_filter(select(IncidentRow), f)
            .where(IncidentRow.id.in_({entity for _, entity in ids}))).all()}
    return ids[-1][0], [(change, incidents[entity]) for change, entity in ids
                        if entity in incidents]
