"""Declarative field mapping from a source record to an envelope.

Every field name in a mapping is a key of the record or, for nested JSON, a path: dotted
keys and list indexes (``report.date``, ``openfda.brand_name[0]``). A key that exists as
written wins (CSV headers such as ``PM2.5`` keep working); errors name the whole path.

Example:
    >>> m = FeedMapping.model_validate({
    ...     "name": "i94", "domain": "traffic", "kind": "traffic.volume",
    ...     "record_id": ["date_time"], "entity_id": {"const": "mndot-atr-301"},
    ...     "time": {"field": "date_time", "format": "%Y-%m-%d %H:%M:%S",
    ...              "timezone": "America/Chicago"},
    ...     "geometry": {"point": [-93.17, 44.96]},
    ...     "attributes": {"volume": {"field": "traffic_volume", "type": "int"}}})
    >>> e = m.to_envelope({"date_time": "2018-09-30 23:00:00", "traffic_volume": "954"},
    ...                   locator="i94.csv:2")
    >>> e.time.isoformat(), e.attributes
    ('2018-10-01T04:00:00+00:00', {'volume': 954})
    >>> lookup({"openfda": {"brand_name": ["Advil", "Motrin"]}}, "openfda.brand_name[1]")
    'Motrin'
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citywatch.streams.envelope import (
    AttributeValue,
    Domain,
    Envelope,
    EnvelopeError,
    check_geometry,
    envelope_id,
    has_surrogate,
    replace_surrogates,
)

DEFAULT_NULLS = ("", "NA", "N/A", "NaN", "nan", "null", "None")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SEGMENT = re.compile(r"([^\[\]]*)((?:\[\d+\])*)")
_MISSING: Any = object()


@lru_cache(maxsize=4096)
def parse_path(field: str) -> tuple[str | int, ...]:
    """The keys and indexes of ``field`` (``a.b[0]`` → ``('a', 'b', 0)``); ValueError
    when it is not a path."""
    parts: list[str | int] = []
    for segment in field.split("."):
        match = _SEGMENT.fullmatch(segment)
        if match is None or (not match.group(1) and not match.group(2)):
            raise ValueError(f"{field!r} is not a field path (keys joined by '.', list "
                             "indexes as [0])")
        if match.group(1):
            parts.append(match.group(1))
        parts += [int(i) for i in re.findall(r"\[(\d+)\]", match.group(2))]
    return tuple(parts)


def lookup(record: dict[str, Any], field: str) -> Any:
    """The value of ``field`` in ``record`` (a key as written, else a path), or a
    sentinel when absent; raises :class:`EnvelopeError` when the record's shape does not
    fit the path (an index into an object, a key into a list)."""
    if field in record:
        return record[field]
    try:
        path = parse_path(field)
    except ValueError:
        return _MISSING
    if len(path) == 1:
        return _MISSING
    value: Any = record
    walked = ""
    for part in path:
        if isinstance(part, int):
            if not isinstance(value, list):
                raise EnvelopeError(f"{walked or 'the record'} is not a list", field=field)
            if part >= len(value):
                return _MISSING
            value, walked = value[part], f"{walked}[{part}]"
        else:
            if not isinstance(value, dict):
                raise EnvelopeError(f"{walked} is not an object", field=field)
            if part not in value:
                return _MISSING
            value, walked = value[part], f"{walked}.{part}" if walked else part
    return value


def _checked_path(field: str) -> str:
    if "[" in field or "]" in field:
        parse_path(field)
    return field


class Const(_Strict):
    """A constant value instead of a field."""

    const: str


class AttributeMap(_Strict):
    """One attribute: source field, type, optional linear unit conversion."""

    field: str
    type: Literal["float", "int", "str", "bool"] = "float"
    optional: bool = False

    @field_validator("field")
    @classmethod
    def _path(cls, value: str) -> str:
        return _checked_path(value)
    scale: float = 1.0
    offset: float = 0.0
    null_values: tuple[str, ...] = DEFAULT_NULLS


class TimeMap(_Strict):
    """Event time: a field parsed with ``format`` (strptime), ISO 8601, or epoch ``unit``.

    Naive times are read in ``timezone`` (IANA name), then converted to UTC.
    """

    field: str
    format: str | None = None
    unit: Literal["s", "ms"] | None = None
    timezone: str = "UTC"

    @field_validator("field")
    @classmethod
    def _path(cls, value: str) -> str:
        return _checked_path(value)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value


class GeometryMap(_Strict):
    """Location: ``lon``/``lat`` fields, a constant ``point``, or the record's GeoJSON
    geometry (``from_record: true``). ``optional`` lets records without one through.
    ``crs`` names the CRS of projected coordinates (``EPSG:2263``): they are converted to
    longitude/latitude."""

    lon: str | None = None
    lat: str | None = None
    point: tuple[float, float] | None = None
    from_record: bool = False
    optional: bool = False
    crs: str | None = None

    @field_validator("crs")
    @classmethod
    def _known_crs(cls, value: str | None) -> str | None:
        if value is not None:
            _to_lonlat(value)
        return value

    @model_validator(mode="after")
    def _one_way(self) -> GeometryMap:
        ways = [self.lon is not None and self.lat is not None, self.point is not None,
                self.from_record]
        if sum(ways) != 1:
            raise ValueError("give exactly one of lon+lat, point, from_record")
        if self.point is not None:
            lon, lat = self.point
            if not (-180 <= lon <= 180 and -90 <= lat <= 90):
                raise ValueError(f"point {list(self.point)} is not [lon, lat] in range")
        return self


class JoinMap(_Strict):
    """A lookup join against a second CSV file (e.g. businesses for coordinates)."""

    path: Path
    key: str
    encoding: str = "utf-8"


class FeedMapping(_Strict):
    """How one feed's records become envelopes."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    domain: Domain
    kind: str
    format: Literal["csv", "jsonl", "geojson", "parquet"] = "csv"
    path: Path | None = None
    encoding: str = "utf-8"
    record_id: list[str] = Field(min_length=1)
    entity_id: str | Const
    time: TimeMap
    geometry: GeometryMap | None = None
    attributes: dict[str, AttributeMap] = {}
    join: JoinMap | None = None

    @classmethod
    def for_feed(cls, name: str, mapping: dict[str, Any] | None) -> FeedMapping | None:
        """The ``mapping`` block of a connector config, named after its feed."""
        return None if mapping is None else cls.model_validate({**mapping, "name": name})

    @cached_property
    def _converters(self) -> list[tuple[str, AttributeMap, Any]]:
        return [(name, spec, _converter(spec)) for name, spec in self.attributes.items()]

    def to_envelope(self, record: dict[str, Any], *, locator: str,
                    received_at: datetime | None = None) -> Envelope:
        """Map one record; raises :class:`EnvelopeError` naming the field and ``locator``.

        Every value is checked as it is converted (finite numbers, coordinates in range,
        GeoJSON shape), so the envelope is built without a second validation pass.
        """
        try:
            return Envelope(
                id=envelope_id(self.name, "/".join(_text(record, f) for f in self.record_id)),
                source=self.name, domain=self.domain, kind=self.kind,
                time=_parse_time(record, self.time),
                received_at=received_at or datetime.now(UTC),
                entity_id=(self.entity_id.const if isinstance(self.entity_id, Const)
                           else _text(record, self.entity_id)),
                geometry=_geometry(record, self.geometry),
                attributes=_attributes(record, self._converters), origin=locator)
        except EnvelopeError as exc:
            raise exc.with_locator(locator) from None


def _raw(record: dict[str, Any], field: str) -> Any:
    value = lookup(record, field)
    if value is _MISSING:
        raise EnvelopeError("missing from the record", field=field)
    return value


def _text(record: dict[str, Any], field: str) -> str:
    value = _raw(record, field)
    if value is None or str(value).strip() == "":
        raise EnvelopeError("empty", field=field)
    if has_surrogate(str(value)):
        raise EnvelopeError("contains a lone surrogate (invalid Unicode)", field=field)
    return str(value).strip()


# strptime formats whose every match datetime.fromisoformat parses identically (and
# several times faster), keyed by the length of a matching string
_ISO_FORMATS = {"%Y-%m-%d %H:%M:%S": 19, "%Y-%m-%dT%H:%M:%S": 19, "%Y-%m-%d": 10,
                "%Y%m%d": 8}


@lru_cache(maxsize=131_072)
def _parse_text_time(text: str, fmt: str | None, zone: str) -> datetime:
    """Parse one time string (cached: feeds repeat dates and hours a lot)."""
    if fmt is None or _ISO_FORMATS.get(fmt) == len(text) and text.isascii() and text[:4].isdigit():
        parsed = datetime.fromisoformat(text)
    else:
        parsed = datetime.strptime(text, fmt)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.astimezone(UTC)


def _parse_time(record: dict[str, Any], spec: TimeMap) -> datetime:
    value = _raw(record, spec.field)
    try:
        if spec.unit is not None:
            seconds = float(value) / (1000.0 if spec.unit == "ms" else 1.0)
            return datetime.fromtimestamp(seconds, UTC)
        return _parse_text_time(str(value).strip(), spec.format, spec.timezone)
    except (TypeError, ValueError, OverflowError, OSError):
        expected = spec.format or (f"epoch {spec.unit}" if spec.unit else "ISO 8601")
        raise EnvelopeError(f"{value!r} is not a time ({expected})", field=spec.field) from None


def _coordinate(record: dict[str, Any], field: str) -> float | None:
    value = _raw(record, field)
    if value is None or str(value).strip() in DEFAULT_NULLS:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise EnvelopeError(f"{value!r} is not a coordinate", field=field) from None
    if not math.isfinite(number):
        raise EnvelopeError(f"{value!r} is not a coordinate", field=field)
    return number


@lru_cache(maxsize=16)
def _to_lonlat(crs: str) -> Any:
    """A transformer from ``crs`` to longitude/latitude (ValueError if unknown)."""
    from pyproj import Transformer
    from pyproj.exceptions import CRSError

    try:
        return Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    except CRSError:
        raise ValueError(f"unknown CRS {crs!r} (e.g. EPSG:2263)") from None


_PROJECTED_HINT = " (projected coordinates? set the mapping's geometry.crs, e.g. EPSG:2263)"


def _geometry(record: dict[str, Any], spec: GeometryMap | None) -> dict[str, Any] | None:
    if spec is None:
        return None
    if spec.point is not None:
        return {"type": "Point", "coordinates": list(spec.point)}
    if spec.from_record:
        geometry = record.get("__geometry__")
        if geometry is None and not spec.optional:
            raise EnvelopeError("missing coordinates", field="geometry")
        if geometry is not None:
            if spec.crs is not None:
                geometry = _reprojected(geometry, spec.crs)
            try:
                check_geometry(geometry)
            except EnvelopeError as exc:
                hint = _PROJECTED_HINT if "range" in exc.reason and spec.crs is None else ""
                raise EnvelopeError(exc.reason + hint, field=exc.field) from None
        return geometry
    assert spec.lon is not None and spec.lat is not None
    lon, lat = _coordinate(record, spec.lon), _coordinate(record, spec.lat)
    if lon is None or lat is None:
        if spec.optional:
            return None
        raise EnvelopeError("missing coordinates", field=spec.lon if lon is None else spec.lat)
    if spec.crs is not None:
        lon, lat = _to_lonlat(spec.crs).transform(lon, lat)
    hint = _PROJECTED_HINT if spec.crs is None else ""
    if not -180 <= lon <= 180:
        raise EnvelopeError(f"{lon} is not a longitude{hint}", field=spec.lon)
    if not -90 <= lat <= 90:
        raise EnvelopeError(f"{lat} is not a latitude{hint}", field=spec.lat)
    return {"type": "Point", "coordinates": [lon, lat]}


def _reprojected(geometry: dict[str, Any], crs: str) -> dict[str, Any]:
    import shapely
    from shapely.geometry import mapping, shape

    transformer = _to_lonlat(crs)
    try:
        moved = shapely.transform(shape(geometry), lambda xy: np.column_stack(
            transformer.transform(xy[:, 0], xy[:, 1])))
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise EnvelopeError(f"not a GeoJSON geometry: {exc}", field="geometry") from None
    return _lists(mapping(moved))


def _lists(value: Any) -> Any:
    """Shapely's ``mapping`` output as plain JSON values (tuples become lists)."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


_TRUE = frozenset({"1", "true", "yes", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "n", "f"})


def _converter(spec: AttributeMap) -> Any:
    """A function converting one raw value per ``spec`` (raises ValueError/TypeError)."""
    if spec.type == "str":
        return lambda value: replace_surrogates(str(value))
    if spec.type == "bool":
        def to_bool(value: Any) -> bool:
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        return to_bool
    scale, offset, integral = spec.scale, spec.offset, spec.type == "int"

    def to_number(value: Any) -> float | int:
        number = float(value) * scale + offset
        if not math.isfinite(number):
            raise ValueError
        if integral:
            if number != int(number):
                raise ValueError
            return int(number)
        return number
    return to_number


def _attributes(record: dict[str, Any],
                converters: list[tuple[str, AttributeMap, Any]]) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for name, spec, convert in converters:
        value = lookup(record, spec.field)
        if value is _MISSING or value is None or (
                isinstance(value, str) and value.strip() in spec.null_values):
            if spec.optional:
                continue
            if value is _MISSING:
                raise EnvelopeError("missing from the record", field=spec.field)
            raise EnvelopeError("empty", field=spec.field)
        try:
            out[name] = convert(value)
        except (TypeError, ValueError, OverflowError):
            raise EnvelopeError(f"{value!r} is not a valid {spec.type}",
                                field=spec.field) from None
    return out
