"""Alerts: what a rule raised, with full lineage (source events, rule and model version).

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
from typing import Any

import msgspec

from citywatch.streams.envelope import AttributeValue, uuid5_text

_ALERT_NAMESPACE = uuid.UUID("0b7e3b8e-93c1-4a0b-8d7f-5f0d64a3c2a9")


def alert_id(rule_id: str, rule_version: str, entity_id: str, event_time: datetime,
             window: str = "") -> str:
    """Deterministic alert id: same rule version, entity and event time/window → same id,
    so replays and redeliveries upsert instead of duplicating."""
    key = "\x1f".join([rule_id, rule_version, entity_id,
                       event_time.astimezone(UTC).isoformat(), window])
    return uuid5_text(_ALERT_NAMESPACE, key)


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """One alert, immutable once raised."""

    id: str
    rule_id: str
    rule_version: str
    domain: str
    kind: str
    severity: str
    urgency: str
    certainty: str
    category: str
    event: str
    message: str
    entity_id: str
    event_time: datetime
    raised_at: datetime
    source_event_ids: list[str]
    zone_layer: str | None = None
    zone_id: str | None = None
    zone_name: str | None = None
    geometry: dict[str, Any] | None = None
    attributes: dict[str, AttributeValue] = {}
    area_circle: tuple[float, float, float] | None = None  # lon, lat, radius m (proximity)
    model_id: str | None = None
    model_version: str | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Alert)


def encode_alert(alert: Alert) -> bytes:
    return _encoder.encode(alert)


def decode_alert(payload: bytes) -> Alert:
    return _decoder.decode(payload)
