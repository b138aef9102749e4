"""OASIS CAP 1.2 export of alerts and incidents, validated against the shipped schema.

Alerts become ``msgType=Alert`` messages. An incident's later state becomes ``Update``
(new alerts or changes) or ``Cancel`` (resolved), with ``references`` to every alert
message of the incident. Areas carry the zone polygon (largest part, simplified to at
most 100 points, closed ring, ``lat,lon`` pairs) or a circle around the event point.
Lineage (rule id and version, model id and version, source event ids) travels as
``<parameter>`` elements.

Validity: ``<effective>`` is the event time and ``<expires>`` the alert's own end of
validity (its rule's ``valid_for`` after the event; 24 h for alerts stored before rules
had it). ``status`` is ``Actual`` unless the deployment says otherwise
(``CITYWATCH_CAP_STATUS``): a sandbox or a replay of history says ``Exercise`` or
``Test``, and then, since such a message is about a rehearsal happening now, its
``<effective>`` is the time it was raised, ``<expires>`` as long after that as the alert's
validity, and the original event time travels as the ``event_time`` parameter.

Example:
    >>> writer = CapWriter(sender="citywatch@city.example")
    >>> from datetime import datetime, timezone
    >>> cap_time(datetime(2022, 1, 5, 12, 0, 0, 123, tzinfo=timezone.utc))
    '2022-01-05T12:00:00+00:00'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import shapely
from lxml import etree
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from citywatch.geo.zones import ZoneIndex
from citywatch.streams.vocabulary import SEVERITY_RANK

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
CAP_XSD = Path(__file__).parent / "standards" / "cap12.xsd"
MAX_POLYGON_POINTS = 100
CapStatus = Literal["Actual", "Exercise", "Test", "System", "Draft"]


class CapValidationError(ValueError):
    """A CAP message that does not validate against the CAP 1.2 schema."""


def cap_time(value: datetime) -> str:
    """CAP's dateTime form: seconds precision and an explicit ``+hh:mm`` offset."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def polygon_ring(geometry: BaseGeometry, max_points: int = MAX_POLYGON_POINTS) -> str:
    """A closed ``lat,lon`` ring of at most ``max_points`` points for a zone."""
    if isinstance(geometry, MultiPolygon):
        geometry = max(geometry.geoms, key=lambda g: g.area)
    if not isinstance(geometry, Polygon):
        geometry = geometry.convex_hull
    ring = shapely.get_exterior_ring(geometry)
    tolerance = 1e-5
    while len(ring.coords) > max_points:
        ring = shapely.get_exterior_ring(geometry.simplify(tolerance, preserve_topology=True))
        tolerance *= 2
    coords = list(ring.coords)
    if coords[0] != coords[-1]:
        coords.append(coords[0])
    return " ".join(f"{lat:.6f},{lon:.6f}" for lon, lat in coords)


class CapWriter:
    """Builds and validates CAP 1.2 messages for stored alerts and incidents."""

    def __init__(self, sender: str, zones: ZoneIndex | None = None,
                 expires_after: timedelta = timedelta(hours=24),
                 status: CapStatus = "Actual") -> None:
        self.sender = sender
        self.expires_after = expires_after
        self.status = status
        self._zones: dict[tuple[str, str], BaseGeometry] = {}
        for name, layer in (zones.layers.items() if zones else ()):
            for zone_id, geom in zip(layer.zone_ids, layer.geometries, strict=True):
                self._zones[(name, zone_id)] = geom
        self._schema = etree.XMLSchema(etree.parse(str(CAP_XSD)))

    def validate(self, document: bytes) -> None:
        root = etree.fromstring(document)
        if not self._schema.validate(root):
            errors = "; ".join(f"line {e.line}: {e.message}" for e in self._schema.error_log)
            raise CapValidationError(errors)

    def alert(self, alert: Any) -> bytes:
        """CAP ``Alert`` message for one stored alert (an ``AlertRow`` or ``Alert``). An
        alert raised from a CAP message references it (``sender,identifier,sent``) and
        carries its instruction: re-publication as citywatch's own CAP."""
        root = self._header(alert.id, alert.raised_at, "Alert")
        attributes = getattr(alert, "attributes", None) or {}
        if all(attributes.get(k) for k in ("sender", "identifier", "sent")):
            _sub(root, "references", ",".join(
                xml_safe(str(attributes[k])) for k in ("sender", "identifier", "sent")))
        self._info(root, alert)
        return self._finish(root)

    def incident(self, incident: Any, alerts: Sequence[Any]) -> bytes:
        """CAP ``Update`` (or ``Cancel`` once resolved) for an incident's current state."""
        msg_type = "Cancel" if incident.status == "resolved" else "Update"
        identifier = f"{incident.id}.r{incident.revision}"
        root = self._header(identifier, incident.updated_at, msg_type)
        refs = " ".join(f"{self.sender},{a.id},{cap_time(a.raised_at)}" for a in alerts)
        if refs:
            _sub(root, "references", refs)
        _sub(root, "incidents", incident.id)
        if alerts:
            worst = max(alerts, key=lambda a: SEVERITY_RANK.get(a.severity, 0))
            self._info(root, worst, headline=f"{incident.title} ({incident.status}, "
                                             f"{incident.alert_count} alert(s))")
        return self._finish(root)

    def _header(self, identifier: str, sent: datetime, msg_type: str) -> etree._Element:
        root = etree.Element(f"{{{CAP_NS}}}alert", nsmap={None: CAP_NS})
        _sub(root, "identifier", identifier)
        _sub(root, "sender", self.sender)
        _sub(root, "sent", cap_time(sent))
        _sub(root, "status", self.status)
        _sub(root, "msgType", msg_type)
        _sub(root, "scope", "Public")
        return root

    def _info(self, root: etree._Element, alert: Any, headline: str | None = None) -> None:
        info = _sub(root, "info")
        _sub(info, "language", "en-US")
        _sub(info, "category", alert.category)
        _sub(info, "event", alert.event)
        _sub(info, "urgency", alert.urgency)
        _sub(info, "severity", alert.severity)
        _sub(info, "certainty", alert.certainty)
        expires = getattr(alert, "expires_at", None) or alert.event_time + self.expires_after
        if self.status == "Actual":
            _sub(info, "effective", cap_time(alert.event_time))
            _sub(info, "expires", cap_time(expires))
        else:  # a rehearsal now: valid from when it was raised, for as long
            _sub(info, "effective", cap_time(alert.raised_at))
            _sub(info, "expires", cap_time(alert.raised_at + (expires - alert.event_time)))
        _sub(info, "senderName", "citywatch")
        _sub(info, "headline", (headline or alert.message)[:160])
        _sub(info, "description", alert.message)
        instruction = (getattr(alert, "attributes", None) or {}).get("instruction")
        if isinstance(instruction, str) and instruction.strip():
            _sub(info, "instruction", instruction)
        lineage = [("rule_id", alert.rule_id), ("rule_version", alert.rule_version),
                   ("model_id", alert.model_id), ("model_version", alert.model_version),
                   ("entity_id", alert.entity_id),
                   ("event_time", cap_time(alert.event_time) if self.status != "Actual"
                    else None),
                   ("source_event_ids", " ".join(alert.source_event_ids))]
        for name, value in lineage:
            if value:
                parameter = _sub(info, "parameter")
                _sub(parameter, "valueName", name)
                _sub(parameter, "value", str(value))
        area = _sub(info, "area")
        _sub(area, "areaDesc", alert.zone_name or alert.entity_id)
        zone = self._zones.get((alert.zone_layer, alert.zone_id))
        circle = getattr(alert, "area_circle", None)
        if zone is not None:
            _sub(area, "polygon", polygon_ring(zone))
        geometry = alert.geometry or {}
        if circle:  # a proximity rule: the circle it watches
            lon, lat, radius_m = circle
            _sub(area, "circle", f"{lat:.6f},{lon:.6f} {radius_m / 1000:g}")
        elif zone is None and geometry.get("type") == "Point":
            lon, lat = geometry["coordinates"][:2]
            _sub(area, "circle", f"{lat:.6f},{lon:.6f} 0")
        elif zone is None and geometry.get("type") in ("Polygon", "MultiPolygon"):
            # the event's own area (a CAP polygon): its exterior rings, coordinates as
            # they came
            polygons = ([geometry["coordinates"]] if geometry["type"] == "Polygon"
                        else geometry["coordinates"])
            for rings in polygons:
                _sub(area, "polygon", " ".join(f"{lat},{lon}" for lon, lat, *_ in rings[0]))

    def _finish(self, root: etree._Element) -> bytes:
        document = etree.tostring(root, xml_declaration=True, encoding="UTF-8",
                                  pretty_print=True)
        self.validate(document)
        return document


def xml_safe(text: str) -> str:
    r"""``text`` with every character XML 1.0 cannot carry (C0 controls other than tab,
    newline and carriage return; lone surrogates; U+FFFE and U+FFFF) replaced by U+FFFD,
    the Unicode replacement character, so a reader sees that something was there.
    XML 1.0 has no escape for them: ``&#1;`` is as invalid as the character itself.

    Example:
        >>> xml_safe("Bay\x0b\x01 Area \ud800") == "Bay\ufffd\ufffd Area \ufffd"
        True
    """
    return _NOT_XML.sub("\ufffd", text)


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _sub(parent: etree._Element, tag: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{CAP_NS}}}{tag}")
    if text is not None:
        element.text = xml_safe(text)
    return element
