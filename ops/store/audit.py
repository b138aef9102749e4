"""The audit log: one record per change, appended in the caller's transaction.

Example:
    >>> from citywatch.ops.store.store import IncidentStore
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> with store.engine.begin() as conn:
    ...     audit(conn, actor="ana", action="note", entity_type="token", entity_id="t1",
    ...           detail={})
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from citywatch.ops.store.locks import lock_change_order
from citywatch.ops.store.schema import AuditRow


def audit(conn: Connection, *, actor: str, action: str, entity_type: str, entity_id: str,
          detail: dict[str, Any]) -> None:
    """Append one audit record (in the caller's transaction). An incident's record is
    also its change for streaming, appended in commit order (see
    :mod:`citywatch.ops.store.changes`)."""
    if entity_type == "incident":
        lock_change_order(conn)
    conn.execute(insert(AuditRow).values(at=datetime.now(UTC), actor=actor, action=action,
                                         entity_type=entity_type, entity_id=entity_id,
                                         detail=detail))
