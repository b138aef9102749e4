"""Incident lifecycle — ``new → acknowledged → resolved``, ``resolved → reopened`` — with
assignee, team and notes; every change appends to the audit log in the same transaction.

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> desk = IncidentDesk(store)
    >>> desk.acknowledge("no-such-id", actor="ana")
    Traceback (most recent call last):
    ...
    citywatch.ops.store.lifecycle.IncidentNotFound: incident 'no-such-id' not found
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from citywatch.ops.store.audit import audit
from citywatch.ops.store.schema import IncidentNoteRow, IncidentRow
from citywatch.ops.store.store import IncidentStore

TRANSITIONS: dict[str, dict[str, str]] = {
    "acknowledge": {"new": "acknowledged", "reopened": "acknowledged"},
    "resolve": {"new": "resolved", "acknowledged": "resolved", "reopened": "resolved"},
    "reopen": {"resolved": "reopened"},
}


class IncidentNotFound(LookupError):
    def __init__(self, incident_id: str) -> None:
        super().__init__(f"incident '{incident_id}' not found")


class InvalidTransition(ValueError):
    """The action is not allowed from the incident's current status."""


class IncidentDesk:
    """What responders do to incidents; each method returns the updated incident row."""

    def __init__(self, store: IncidentStore) -> None:
        self.store = store

    def _load(self, conn: Connection, incident_id: str) -> IncidentRow:
        row = conn.execute(select(IncidentRow).where(IncidentRow.id == incident_id)
                           .with_for_update()).one_or_none()
        if row is None:
            raise IncidentNotFound(incident_id)
        return row  # type: ignore[return-value]

    def _transition(self, incident_id: str, action: str, actor: str) -> Any:
        now = datetime.now(UTC)
        with self.store.engine.begin() as conn:
            row = self._load(conn, incident_id)
            target = TRANSITIONS[action].get(row.status)
            if target is None:
                raise InvalidTransition(f"cannot {action} an incident that is {row.status}")
            values: dict[str, Any] = {"status": target, "updated_at": now,
                                      "revision": row.revision + 1}
            if target == "acknowledged":
                values["acknowledged_at"] = now
            if target == "resolved":
                values["resolved_at"] = now
            conn.execute(update(IncidentRow).where(IncidentRow.id == incident_id)
                         .values(**values))
            audit(conn, actor=actor, action=action, entity_type="incident",
                  entity_id=incident_id, detail={"from": row.status, "to": target})
            return self._load(conn, incident_id)

    def acknowledge(self, incident_id: str, *, actor: str) -> Any:
        return self._transition(incident_id, "acknowledge", actor)

    def resolve(self, incident_id: str, *, actor: str) -> Any:
        return self._transition(incident_id, "resolve", actor)

    def reopen(self, incident_id: str, *, actor: str) -> Any:
        return self._transition(incident_id, "reopen", actor)

    def assign(self, incident_id: str, *, actor: str, assignee: str | None,
               team: str | None) -> Any:
        now = datetime.now(UTC)
        with self.store.engine.begin() as conn:
            row = self._load(conn, incident_id)
            conn.execute(update(IncidentRow).where(IncidentRow.id == incident_id).values(
                assignee=assignee, team=team, updated_at=now, revision=row.revision + 1))
            audit(conn, actor=actor, action="assign", entity_type="incident",
                  entity_id=incident_id,
                  detail={"from": {"assignee": row.assignee, "team": row.team},
                          "to": {"assignee": assignee, "team": team}})
            return self._load(conn, incident_id)

    def add_note(self, incident_id: str, *, actor: str, text: str) -> Any:
        now = datetime.now(UTC)
        with self.store.engine.begin() as conn:
            row = self._load(conn, incident_id)
            conn.execute(insert(IncidentNoteRow).values(incident_id=incident_id, author=actor,
                                                        text=text, created_at=now))
            conn.execute(update(IncidentRow).where(IncidentRow.id == incident_id)
                         .values(updated_at=now, revision=row.revision + 1))
            audit(conn, actor=actor, action="note", entity_type="incident",
                  entity_id=incident_id, detail={"text": text})
            return self._load(conn, incident_id)
