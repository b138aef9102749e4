"""citywatch alerts as FIWARE Smart Data Models ``Alert`` entities, for NGSI-LD context
brokers (Orion-LD, Scorpio, Stellio): key-values and normalized forms, validated against
the shipped ``Alert`` JSON Schema, and the body of an ``entityOperations/upsert``.

The mapping: CAP severity → ``severity`` (Extreme critical, Severe high, Moderate medium,
Minor low, Unknown informational); domain (and CAP category for CAP-raised alerts) →
``category``; the event kind → ``subCategory`` where the model has a word for it; the
place (point, zone polygon, or the centre of a proximity circle) → ``location``; event
time → ``validFrom``, the alert's validity → ``validTo``; the rule (id and version) →
``alertSource``; the lineage (rule, model, source events, zone) → ``data``.

Example:
    >>> from datetime import UTC, datetime
    >>> from citywatch.streams.alert import Alert
    >>> alert = Alert(id="a1", rule_id="quake-m45", rule_version="v1", domain="disaster",
    ...     kind="earthquake.reported", severity="Severe", urgency="Immediate",
    ...     certainty="Observed", category="Geo", event="Earthquake", message="M4.6",
    ...     entity_id="us7000", event_time=datetime(2024, 1, 1, tzinfo=UTC),
    ...     raised_at=datetime(2024, 1, 1, 0, 1, tzinfo=UTC), source_event_ids=["e1"],
    ...     geometry={"type": "Point", "coordinates": [-122.4, 37.8]})
    >>> entity = alert_entity(alert)
    >>> entity["id"], entity["category"], entity["subCategory"], entity["severity"]
    ('urn:ngsi-ld:Alert:citywatch:a1', 'naturalDisaster', 'earthquake', 'high')
    >>> validate_alert_entity(entity)
    >>> normalized(entity)["severity"]
    {'type': 'Property', 'value': 'high'}
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from citywatch.connectors.ngsi import validator

NGSI_LD_CONTEXT = [
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Alert/master/context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld",
]
SEVERITY = {"Extreme": "critical", "Severe": "high", "Moderate": "medium", "Minor": "low",
            "Unknown": "informational"}
CATEGORY = {"traffic": "traffic", "environment": "environment", "food_safety": "health",
            "disaster": "naturalDisaster"}
CAP_CATEGORY = {"Met": "weather", "Health": "health", "Env": "environment",
                "Transport": "traffic", "Security": "security", "Geo": "naturalDisaster"}
SUB_CATEGORY = {"earthquake": "earthquake", "traffic": "trafficJam",
                "air_quality": "airPollution", "flood": "flood", "tsunami": "tsunami"}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _location(alert: Any) -> dict[str, Any] | None:
    circle = getattr(alert, "area_circle", None)
    geometry = alert.geometry
    if geometry and geometry.get("type") in ("Point", "Polygon", "MultiPolygon",
                                              "LineString", "MultiLineString",
                                              "MultiPoint"):
        return geometry
    if circle:
        return {"type": "Point", "coordinates": [circle[0], circle[1]]}
    return None


def alert_entity(alert: Any) -> dict[str, Any]:
    """The key-values ``Alert`` entity of a citywatch alert (an ``Alert`` or a stored
    row)."""
    attributes = getattr(alert, "attributes", None) or {}
    category = (CAP_CATEGORY.get(alert.category) if alert.kind.startswith("cap.")
                else None) or CATEGORY.get(alert.domain, "security")
    sub = next((word for prefix, word in SUB_CATEGORY.items()
                if alert.kind.startswith(prefix)), None)
    entity: dict[str, Any] = {
        "id": f"urn:ngsi-ld:Alert:citywatch:{alert.id}", "type": "Alert",
        "category": category, "severity": SEVERITY.get(alert.severity, "informational"),
        "dateIssued": _iso(alert.raised_at), "validFrom": _iso(alert.event_time),
        "description": alert.message[:1000], "name": alert.event[:256],
        "alertSource": f"urn:ngsi-ld:citywatch:rule:{alert.rule_id}:{alert.rule_version}",
        "dataProvider": "citywatch",
        "data": {k: v for k, v in {
            "ruleId": alert.rule_id, "ruleVersion": alert.rule_version,
            "modelId": alert.model_id, "modelVersion": alert.model_version,
            "entityId": alert.entity_id, "zone": alert.zone_name,
            "sourceEventIds": list(alert.source_event_ids),
            "capMessage": (f"{attributes.get('sender')},{attributes.get('identifier')}"
                           if alert.kind.startswith("cap.") else None)}.items()
            if v is not None}}
    if sub is not None:
        entity["subCategory"] = sub
    expires = getattr(alert, "expires_at", None)
    if expires is not None:
        entity["validTo"] = _iso(expires)
    location = _location(alert)
    if location is not None:
        entity["location"] = location
    return entity


class AlertEntityError(ValueError):
    """An entity the ``Alert`` schema refuses (names the property)."""


def validate_alert_entity(entity: dict[str, Any]) -> None:
    """Raise :class:`AlertEntityError` unless the key-values ``entity`` is a valid
    Smart Data Models ``Alert``."""
    errors = sorted(validator("Alert").iter_errors(entity), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(entity)"
        raise AlertEntityError(f"{where}: {first.message} (FIWARE Alert schema)")


def normalized(entity: dict[str, Any]) -> dict[str, Any]:
    """The NGSI-LD normalized form: a Property, GeoProperty or Relationship per
    attribute, and the ``@context``."""
    out: dict[str, Any] = {"id": entity["id"], "type": entity["type"]}
    for key, value in entity.items():
        if key in ("id", "type"):
            continue
        if key == "location":
            out[key] = {"type": "GeoProperty", "value": value}
        elif key == "alertSource":
            out[key] = {"type": "Relationship", "object": value}
        elif key in ("dateIssued", "validFrom", "validTo"):
            out[key] = {"type": "Property",
                        "value": {"@type": "DateTime", "@value": value}}
        else:
            out[key] = {"type": "Property", "value": value}
    out["@context"] = NGSI_LD_CONTEXT
    return out


def key_values(entity: dict[str, Any]) -> dict[str, Any]:
    """The key-values form of a normalized entity (what the schema describes)."""
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if key == "@context":
            continue
        if not isinstance(value, dict) or key in ("id", "type"):
            out[key] = value
        elif value.get("type") == "Relationship":
            out[key] = value["object"]
        else:
            inner = value["value"]
            out[key] = inner["@value"] if isinstance(inner, dict) and "@value" in inner \
                else inner
    return out


def upsert_body(alert: Any) -> str:
    """The JSON body of ``POST /ngsi-ld/v1/entityOperations/upsert`` for one alert
    (``Content-Type: application/ld+json``)."""
    return json.dumps([normalized(alert_entity(alert))])
