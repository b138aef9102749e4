"""The ``cap`` connector: OASIS CAP 1.1 and 1.2 alerts into disaster events.

Messages are parsed namespace-aware (default namespace or any prefix) and validated
against the schema of their version; an invalid message is rejected with the reason.
Each ``<info>``/``<area>`` pair becomes one envelope: ``<polygon>``s become a (Multi)
Polygon, a ``<circle>`` becomes a polygon computed in an azimuthal-equidistant metric
projection around its centre, and ``<geocode>``s travel as attributes.

Config: ``path`` (file or glob) or ``url``; optional ``name`` (default ``cap``).

Example:
    >>> source = CapSource.from_config({"path": "alerts/*.cap"}, Path("."))  # doctest: +SKIP
    >>> [e.geometry["type"] for e in source.run()]                          # doctest: +SKIP
    ['Polygon']
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import shapely
from lxml import etree
from pydantic import Field
from pyproj import CRS, Transformer
from shapely.geometry import Point, Polygon
from shapely.ops import transform

from citywatch.connectors.base import CountingCheckpoint, Source, SourceItem
from citywatch.connectors.config import (
    ConnectorConfigError,
    PathOrUrl,
    expand,
    read_documents,
    resolve,
    validate_config,
)
from citywatch.streams.envelope import AttributeValue, EnvelopeError

CAP_VERSIONS = {"urn:oasis:names:tc:emergency:cap:1.2": "cap12.xsd",
                "urn:oasis:names:tc:emergency:cap:1.1": "cap11.xsd"}
STANDARDS = Path(__file__).resolve().parent.parent / "ops" / "standards"


class CapError(ValueError):
    """A CAP message that cannot be used, with the reason."""


class CapConfig(PathOrUrl):
    name: str = Field(default="cap", pattern=r"^[a-z0-9][a-z0-9_.-]*$")


@cache
def _schema(namespace: str) -> etree.XMLSchema:
    from importlib.resources import files

    name = CAP_VERSIONS[namespace]
    packaged = files("citywatch.ops").joinpath("standards", name)
    return etree.XMLSchema(etree.parse(str(packaged)))


def parse_cap(document: bytes) -> etree._Element:
    """The validated ``<alert>`` root; raises :class:`CapError` with the reason."""
    try:
        root = etree.fromstring(document, parser=etree.XMLParser(resolve_entities=False,
                                                                 no_network=True))
    except etree.XMLSyntaxError as exc:
        raise CapError(f"not well-formed XML: {exc}") from None
    namespace = etree.QName(root).namespace
    if etree.QName(root).localname != "alert" or namespace not in CAP_VERSIONS:
        raise CapError(f"not a CAP 1.1/1.2 alert: root element is {root.tag}")
    schema = _schema(namespace)
    if not schema.validate(root):
        first = schema.error_log[0]
        raise CapError(f"invalid CAP ({CAP_VERSIONS[namespace][:5]}): line {first.line}: "
                       f"{first.message}")
    return root


def _text(element: etree._Element, name: str, ns: str) -> str | None:
    found = element.find(f"{{{ns}}}{name}")
    return found.text.strip() if found is not None and found.text else None


def _polygon(text: str) -> Polygon:
    pairs = [p.split(",") for p in text.split()]
    try:
        coords = [(float(lon), float(lat)) for lat, lon in pairs]
    except ValueError:
        raise CapError(f"polygon is not 'lat,lon' pairs: {text[:60]!r}") from None
    if len(coords) < 4 or coords[0] != coords[-1]:
        raise CapError("polygon needs at least 4 points and a closed ring")
    return Polygon(coords)


def circle_polygon(text: str, segments: int = 64) -> Polygon:
    """A CAP circle (``lat,lon radius_km``) as a polygon, buffered in metres."""
    try:
        centre, radius = text.split()
        lat, lon = (float(v) for v in centre.split(","))
        radius_m = float(radius) * 1000.0
    except ValueError:
        raise CapError(f"circle is not 'lat,lon radius': {text!r}") from None
    if radius_m <= 0:
        return Point(lon, lat).buffer(1e-6)
    local = CRS.from_proj4(f"+proj=aeqd +lat_0={lat} +lon_0={lon} +units=m +datum=WGS84")
    to_lonlat = Transformer.from_crs(local, "EPSG:4326", always_xy=True).transform
    return transform(to_lonlat, Point(0, 0).buffer(radius_m, quad_segs=segments // 4))


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def cap_records(root: etree._Element) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(suffix, record)`` per info/area: the values an envelope needs, and everything
    a responder or a re-publication needs from the message: ``msg_type``, ``sent`` and
    ``references`` (what an Update or Cancel refers to), ``description``,
    ``instruction``, ``expires``, ``response_type``, ``web``, each ``parameter.NAME`` and
    each ``geocode.NAME``; the area's polygons and circles as its geometry."""
    ns = etree.QName(root).namespace
    head = {name: _text(root, name, ns) for name in ("identifier", "sender", "sent",
                                                     "status", "msgType", "scope",
                                                     "references", "note")}
    _check_references(head["references"])
    for i, info in enumerate(root.findall(f"{{{ns}}}info")):
        base: dict[str, AttributeValue] = {
            "identifier": head["identifier"], "sender": head["sender"],
            "sent": head["sent"], "status": head["status"], "msg_type": head["msgType"],
            "references": head["references"], "note": head["note"],
            "category": ",".join(c.text or "" for c in info.findall(f"{{{ns}}}category")),
            "response_type": ",".join(r.text or "" for r in info.findall(
                f"{{{ns}}}responseType")) or None,
        }
        for name in ("event", "urgency", "severity", "certainty", "headline", "language",
                     "description", "instruction", "expires", "web", "senderName"):
            base[_snake(name)] = _text(info, name, ns)
        for parameter in info.findall(f"{{{ns}}}parameter"):
            key = f"parameter.{_text(parameter, 'valueName', ns)}"
            value = _text(parameter, "value", ns) or ""
            base[key] = f"{base[key]},{value}" if key in base else value
        when = (_when(_text(info, "onset", ns)) or _when(_text(info, "effective", ns))
                or _when(head["sent"]))
        areas = info.findall(f"{{{ns}}}area") or [None]
        for j, area in enumerate(areas):
            attrs = dict(base)
            shapes: list[Polygon] = []
            if area is not None:
                attrs["area_desc"] = _text(area, "areaDesc", ns)
                shapes += [_polygon(p.text or "") for p in area.findall(f"{{{ns}}}polygon")]
                shapes += [circle_polygon(c.text or "") for c in area.findall(f"{{{ns}}}circle")]
                for code in area.findall(f"{{{ns}}}geocode"):
                    key = f"geocode.{_text(code, 'valueName', ns)}"
                    value = _text(code, "value", ns) or ""
                    attrs[key] = f"{attrs[key]},{value}" if key in attrs else value
            geometry = None
            if len(shapes) == 1:  # as published: its coordinates are what it says
                geometry = json.loads(shapely.to_geojson(shapes[0]))
            elif shapes:  # overlapping areas merge into one valid (Multi)Polygon
                merged = shapely.union_all(shapes)
                geometry = json.loads(shapely.to_geojson(shapely.set_precision(merged, 1e-7)))
            yield f"{i}/{j}", {"head": head, "time": when, "attributes": {
                k: v for k, v in attrs.items() if v is not None}, "geometry": geometry}


def _check_references(text: str | None) -> None:
    """CAP references: space-separated ``sender,identifier,sent`` triples."""
    for triple in (text or "").split():
        parts = triple.split(",")
        try:
            ok = len(parts) == 3 and all(parts) and datetime.fromisoformat(parts[2])
        except ValueError:
            ok = False
        if not ok:
            raise CapError(f"references: {triple!r} is not 'sender,identifier,sent'")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


class CapSource(CountingCheckpoint, Source):
    """CAP files or one CAP URL → one disaster event per ``<info>``/``<area>``."""

    domain = "disaster"
    summary = "OASIS CAP 1.1/1.2 alerts (file, glob or URL) into disaster events"

    def __init__(self, name: str = "cap", paths: list[Path] | None = None,
                 url: str | None = None) -> None:
        super().__init__(name)
        self.paths = paths or []
        self.url = url

    @classmethod
    def from_config(cls, config: dict[str, Any], base_dir: Path) -> CapSource:
        parsed = validate_config(CapConfig, config, source="")
        paths = expand(base_dir, parsed.path) if parsed.path is not None else []
        if parsed.path is not None and not paths:
            raise ConnectorConfigError(f"path: no file matches {resolve(base_dir, parsed.path)}")
        return cls(parsed.name, paths=paths, url=parsed.url)

    def run(self) -> Iterator[SourceItem]:
        yield from self.counted(self._items())

    def _items(self) -> Iterator[SourceItem]:
        for locator, document, error in read_documents(self.paths, self.url):
            if not self.running:
                return
            if document is None:
                yield self.reject(error or "unreadable", locator=locator)
                continue
            yield from self.from_document(document, locator)

    def from_document(self, document: bytes, locator: str) -> Iterator[SourceItem]:
        """Items for one CAP message (also used by the ``http`` connector)."""
        raw = document.decode("utf-8", "replace")
        try:
            root = parse_cap(document)
            records = list(cap_records(root))
        except CapError as exc:
            yield self.reject(str(exc), locator=locator, raw=raw)
            return
        for suffix, record in records:
            head = record["head"]
            try:
                if record["time"] is None:
                    raise EnvelopeError("no onset, effective or sent time", field="sent")
                yield self.envelope(
                    record_id=f"{head['sender']}/{head['identifier']}/{suffix}",
                    kind=f"cap.{(head['msgType'] or 'alert').lower()}", time=record["time"],
                    entity_id=head["identifier"] or "", geometry=record["geometry"],
                    attributes=record["attributes"],
                    locator=f"{locator}#info/area[{suffix}]")
            except (EnvelopeError, ValueError) as exc:
                error = exc if isinstance(exc, EnvelopeError) else EnvelopeError(str(exc))
                yield self.reject(error, locator=f"{locator}#info/area[{suffix}]", raw=raw)
