"""Alert identity: which raised alerts are one alert.

An alert is identified within its rule version by what it fired on, never by entity and
time alone (two readings of one site at one time are two alerts):

- raised by one event: that event's id (``event_key``), plus the window or streak it
  completed, if any;
- about a group (a closed window, a silent sensor, a correlation, a forecast crossing):
  the group key, the window or episode and its time (``group_key``);
- with a ``dedupe_key`` template: the rendered key (``dedupe_key``), the explicit
  "these are one alert" — on its own for rules without a cooldown, per episode (the
  alert that opens a cooldown or clear cycle) for rules with one.

The same event replayed always yields the same id; distinct events never share one
unless a ``dedupe_key`` says so.

Example:
    >>> from datetime import datetime, timezone
    >>> t = datetime(2022, 1, 5, tzinfo=timezone.utc)
    >>> a = alert_id("pm25-high", "abc123", event_key("event-1"))
    >>> a == alert_id("pm25-high", "abc123", event_key("event-1"))
    True
    >>> a == alert_id("pm25-high", "abc123", event_key("event-2"))
    False
    >>> alert_id("w", "v", group_key("Bronx", t, "2022-01-05/86400")) != a
    True
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from citywatch.streams.envelope import uuid5_text

_ALERT_NAMESPACE = uuid.UUID("0b7e3b8e-93c1-4a0b-8d7f-5f0d64a3c2a9")
_SEP = "\x1f"


def event_key(event_id: str, window: str = "") -> str:
    """The identity of an alert raised by one event (and the window it closed)."""
    return _SEP.join(["event", event_id, window])


def group_key(group: str, time: datetime, window: str = "") -> str:
    """The identity of an alert about a group at a window or episode."""
    return _SEP.join(["group", group, time.astimezone(UTC).isoformat(), window])


def dedupe_key(key: str, time: datetime | None = None, window: str = "") -> str:
    """The identity a rule's ``dedupe_key`` gives: the key alone, or per episode."""
    when = "" if time is None else time.astimezone(UTC).isoformat()
    return _SEP.join(["dedupe", key, when, window])


def alert_id(rule_id: str, rule_version: str, key: str) -> str:
    """Deterministic alert id of a rule version and an identity key (above), so replays
    and redeliveries upsert instead of duplicating."""
    return uuid5_text(_ALERT_NAMESPACE, _SEP.join([rule_id, rule_version, key]))
