"""Test alerts with realistic fields (EPA PM2.5 style) and deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from citywatch.rules.identity import alert_id, event_key
from citywatch.streams.alert import Alert


def make_alert(n: int, *, zone: str | None = "Bronx", severity: str = "Moderate",
               hours: int = 0, rule: str = "pm25-high", domain: str = "environment",
               category: str = "Health", lon: float = -73.9, lat: float = 40.85) -> Alert:
    when = datetime(2022, 1, 5, 12, tzinfo=UTC) + timedelta(hours=hours)
    return Alert(id=alert_id(rule, "v1", event_key(f"ev-{n}-{hours}")), rule_id=rule,
                 rule_version="v1",
                 domain=domain, kind="air_quality.observed", severity=severity,
                 urgency="Immediate", certainty="Observed", category=category,
                 event="PM2.5 high", message=f"site {n}", entity_id=f"site-{n}",
                 event_time=when, raised_at=when, source_event_ids=[f"ev-{n}"],
                 zone_layer="nyc-boroughs" if zone else None, zone_id=zone, zone_name=zone,
                 geometry={"type": "Point", "coordinates": [lon, lat]},
                 attributes={"pm25": 25.0})
