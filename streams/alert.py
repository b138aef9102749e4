"""The canonical alert message: what a rule raised, with full lineage (source events,
rule and model version). One JSON object per message on the public ``alerts`` topic.

Example:
    >>> from datetime import datetime, timezone
    >>> t = datetime(2022, 1, 5, tzinfo=timezone.utc)
    >>> a = Alert(id="a1", rule_id="pm25-high", rule_version="abc123", domain="environment",
    ...           kind="pm25", severity="Moderate", urgency="Immediate", certainty="Observed",
    ...           category="Env", event="PM2.5 high", message="PM2.5 41", entity_id="s1",
    ...           event_time=t, raised_at=t, source_event_ids=["e1"])
    >>> decode_alert(encode_alert(a)) == a
    True
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from citywatch.streams.envelope import AttributeValue


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
    source_origins: list[str] = []  # where each source event came from, "" if unknown
    evaluation: dict[str, AttributeValue] = {}  # what a stateful or forecast rule computed
    expires_at: datetime | None = None  # event_time + the rule's valid_for


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Alert)


def encode_alert(alert: Alert) -> bytes:
    return _encoder.encode(alert)


def decode_alert(payload: bytes) -> Alert:
    return _decoder.decode(payload)
