"""CAP ``Update`` and ``Cancel`` messages acting on the incidents raised from the
messages they reference.

An alert raised from a CAP message remembers it (``cap_message``: ``sender,identifier``).
When a new alert comes from a CAP ``Cancel`` whose ``references`` name earlier messages,
every open incident raised from those messages is resolved; from an ``Update``, each gets
an ``cap_update`` entry. Both are audited with the CAP sender as the actor
(``cap:SENDER``) and the message's identifier, in the transaction that stores the alert.

Example:
    >>> cap_message({"sender": "w-nws@noaa.gov", "identifier": "NWS-1"})
    'w-nws@noaa.gov,NWS-1'
    >>> referenced("a@x,ID1,2024-01-01T00:00:00-00:00 b@y,ID2,2024-01-02T00:00:00-00:00")
    ['a@x,ID1', 'b@y,ID2']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from citywatch.ops.store.audit import audit
from citywatch.ops.store.schema import AlertRow, IncidentRow
from citywatch.streams.alert import Alert


def cap_message(attributes: Mapping[str, Any]) -> str | None:
    """``sender,identifier`` of the CAP message an event came from, if it did."""
    sender, identifier = attributes.get("sender"), attributes.get("identifier")
    if isinstance(sender, str) and isinstance(identifier, str) and sender and identifier:
        return f"{sender},{identifier}"
    return None


def referenced(references: str) -> list[str]:
    """``sender,identifier`` of each ``sender,identifier,sent`` triple."""
    return [",".join(triple.split(",")[:2]) for triple in references.split()
            if triple.count(",") >= 2]


def apply_cap_references(conn: Connection, alerts: Sequence[Alert], now: datetime) -> int:
    """Resolve (Cancel) or annotate (Update) the incidents raised from the messages the
    new ``alerts`` reference; returns how many incidents changed."""
    changed = 0
    for alert in alerts:
        kind = alert.attributes.get("msg_type")
        refs = alert.attributes.get("references")
        if kind not in ("Update", "Cancel") or not isinstance(refs, str):
            continue
        targets = referenced(refs)
        if not targets:
            continue
        incidents = conn.execute(
            select(IncidentRow).where(IncidentRow.id.in_(
                select(AlertRow.incident_id).where(AlertRow.cap_message.in_(targets))))
            .order_by(IncidentRow.id).with_for_update()).all()
        actor = f"cap:{alert.attributes.get('sender')}"
        detail = {"msg_type": kind, "identifier": alert.attributes.get("identifier"),
                  "references": targets, "alert_id": alert.id}
        for incident in incidents:
            values: dict[str, Any] = {"updated_at": now, "revision": incident.revision + 1}
            if kind == "Cancel":
                if incident.status == "resolved":
                    continue
                values.update(status="resolved", resolved_at=now)
                action, entry = "resolve", {**detail, "from": incident.status,
                                            "to": "resolved"}
            else:
                action, entry = "cap_update", detail
            conn.execute(update(IncidentRow).where(IncidentRow.id == incident.id)
                         .values(**values))
            audit(conn, actor=actor, action=action, entity_type="incident",
                  entity_id=incident.id, detail=entry)
            changed += 1
    return changed
