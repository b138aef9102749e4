"""Alert identity: which raised alerts are one alert.

Example:
    >>> from datetime import datetime, timezone
    >>> t = datetime(2022, 1, 5, tzinfo=timezone.utc)
    >>> alert_id("pm25-high", "abc123", "360050110", t) == alert_id(
    ...     "pm25-high", "abc123", "360050110", t)
    True
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from citywatch.streams.envelope import uuid5_text

_ALERT_NAMESPACE = uuid.UUID("0b7e3b8e-93c1-4a0b-8d7f-5f0d64a3c2a9")


def alert_id(rule_id: str, rule_version: str, entity_id: str, event_time: datetime,
             window: str = "") -> str:
    """Deterministic alert id: same rule version, entity and event time/window → same id,
    so replays and redeliveries upsert instead of duplicating."""
    key = "\x1f".join([rule_id, rule_version, entity_id,
                       event_time.astimezone(UTC).isoformat(), window])
    return uuid5_text(_ALERT_NAMESPACE, key)
