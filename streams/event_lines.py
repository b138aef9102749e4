"""Events as JSON Lines, full envelopes or written by hand, for ``rules test`` and
``backtest``.

A hand-written event needs only what a person would write: ``domain``, ``kind``,
``time``, ``entity`` (or ``entity_id``), and optionally ``geometry`` and ``attributes``.
What it lacks is derived: ``source`` is ``hand-written``; ``id`` comes from the event's
own content (the same line written twice is the same event); ``received_at`` is the event
time. A line that has an ``id`` is read as a full envelope.

Example:
    >>> line = (b'{"domain": "disaster", "kind": "earthquake.reported", '
    ...         b'"time": "2024-01-02T03:04:05Z", "entity": "quake-1", '
    ...         b'"geometry": {"type": "Point", "coordinates": [-122.3, 37.9]}, '
    ...         b'"attributes": {"mag": 4.8}}')
    >>> event = parse_event_line(line, locator="quakes.jsonl:1")
    >>> event.entity_id, event.attributes["mag"], event.received_at == event.time
    ('quake-1', 4.8, True)
    >>> parse_event_line(line).id == event.id
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from citywatch.streams.envelope import Envelope, EnvelopeError, decode_envelope, make_envelope

HAND_WRITTEN = "hand-written"
KNOWN = frozenset({"domain", "kind", "time", "entity", "entity_id", "geometry", "attributes",
                   "source", "received_at"})


def parse_event_line(line: bytes, *, locator: str | None = None) -> Envelope:
    """One event from a JSON line; :class:`EnvelopeError` names the field and locator."""
    try:
        data = msgspec.json.decode(line)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"not valid JSON: {exc}", locator=locator) from None
    if not isinstance(data, dict):
        raise EnvelopeError("an event is a JSON object", locator=locator)
    if "id" in data:
        return decode_envelope(line, locator=locator)
    try:
        return _hand_written(data)
    except EnvelopeError as exc:
        raise exc.with_locator(locator) if locator else exc from None


def _hand_written(data: dict[str, Any]) -> Envelope:
    unknown = sorted(set(data) - KNOWN)
    if unknown:
        raise EnvelopeError(f"unknown field (an event has {', '.join(sorted(KNOWN))})",
                            field=unknown[0])
    for required in ("domain", "kind", "time"):
        if required not in data:
            raise EnvelopeError("is required", field=required)
    entity = data.get("entity", data.get("entity_id"))
    if not isinstance(entity, str):
        raise EnvelopeError("is required (a string)", field="entity")
    time = _time(data["time"], "time")
    attributes = data.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise EnvelopeError("must be an object", field="attributes")
    content = msgspec.json.encode({k: data[k] for k in sorted(data)})
    return make_envelope(
        source=str(data.get("source", HAND_WRITTEN)),
        source_record_id=hashlib.sha256(content).hexdigest()[:20],
        domain=str(data["domain"]), kind=str(data["kind"]), time=time, entity_id=entity,
        geometry=data.get("geometry"), attributes=attributes,
        received_at=_time(data["received_at"], "received_at") if "received_at" in data
        else time)


def _time(value: object, field: str) -> datetime:
    if not isinstance(value, str):
        raise EnvelopeError("must be an ISO 8601 time with a zone", field=field)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EnvelopeError(f"{value!r} is not an ISO 8601 time", field=field) from None
    if moment.tzinfo is None:
        raise EnvelopeError("must carry a time zone (e.g. Z or +01:00)", field=field)
    return moment


def read_event_lines(path: Path) -> Iterator[Envelope | EnvelopeError]:
    """Each non-blank line of ``path`` as an event, or the error that refuses it."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    yield parse_event_line(line, locator=f"{path.name}:{number}")
                except EnvelopeError as exc:
                    yield exc
