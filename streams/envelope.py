"""The canonical event envelope every connector maps into and every stage reads.

One record per real-world observation. ``id`` is derived from the source and the source's
own record id, so a replay of the same data produces the same ids and is deduplicated
downstream.

Example:
    >>> from datetime import datetime, timezone
    >>> e = make_envelope(source="epa-aqs", source_record_id="360050110/2022-01-01",
    ...     domain="environment", kind="air_quality.observed",
    ...     time=datetime(2022, 1, 1, tzinfo=timezone.utc), entity_id="360050110",
    ...     geometry={"type": "Point", "coordinates": [-73.9, 40.8]},
    ...     attributes={"pm25": 8.0})
    >>> decode_envelope(encode_envelope(e)).id == e.id
    True
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
import shapely
import shapely.validation
from msgspec import Meta

SCHEMA_VERSION = 1
DOMAINS: tuple[str, ...] = ("traffic", "environment", "food_safety", "disaster")
Domain = Literal["traffic", "environment", "food_safety", "disaster"]
AttributeValue = float | int | str | bool | None
NonEmpty = Annotated[str, Meta(min_length=1)]
AwareTime = Annotated[datetime, Meta(tz=True)]

_ID_NAMESPACE = uuid.UUID("6f1c7d0e-52a4-4c8e-9a55-2b1d8f0c3e11")


class EnvelopeError(ValueError):
    """A record that cannot become a valid envelope.

    Carries the offending ``field`` and a ``locator`` that names the record
    (``file.csv:17``, ``raw.environment/0@1234``) so the dead-letter entry is actionable.
    """

    def __init__(self, message: str, *, field: str | None = None, locator: str | None = None):
        self.reason = message
        self.field = field
        self.locator = locator
        where = f"{locator}: " if locator else ""
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}{what}{message}")

    def with_locator(self, locator: str) -> EnvelopeError:
        """Return a copy of this error that names ``locator`` as the failing record."""
        return EnvelopeError(self.reason, field=self.field, locator=locator)


class Envelope(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One validated event, identical for every domain.

    Attributes:
        id: stable id, ``uuid5(source, source_record_id)``.
        source: connector or feed name, e.g. ``epa-aqs``.
        domain: one of :data:`DOMAINS`.
        kind: dotted event kind, e.g. ``air_quality.observed``.
        time: event time, timezone-aware UTC.
        received_at: when citywatch received the record, timezone-aware UTC.
        geometry: a GeoJSON geometry (usually a Point) or ``None`` when the source has none.
        entity_id: the sensor, station, business or event the record is about.
        attributes: the measured values, flat.
        origin: where the connector read the record (``file.csv:17``, a URL, an MQTT
            topic), for lineage; not part of the id.
        schema_version: envelope schema version.

    Field types and time zones are checked by msgspec when decoding; geometry and
    attribute values by :func:`validate_envelope`. Use :func:`make_envelope` or
    :func:`decode_envelope`, which do both.
    """

    id: NonEmpty
    source: NonEmpty
    domain: Domain
    kind: NonEmpty
    time: AwareTime
    received_at: AwareTime
    entity_id: NonEmpty
    geometry: dict[str, Any] | None = None
    attributes: dict[str, AttributeValue] = {}
    origin: str | None = None
    schema_version: int = SCHEMA_VERSION

    @property
    def point(self) -> tuple[float, float] | None:
        """``(lon, lat)`` of a Point geometry, else ``None``."""
        if self.geometry and self.geometry.get("type") == "Point":
            lon, lat = self.geometry["coordinates"][:2]
            return float(lon), float(lat)
        return None


def validate_envelope(envelope: Envelope) -> Envelope:
    """Checks msgspec types cannot express; raises :class:`EnvelopeError` naming the field."""
    if envelope.geometry is not None:
        check_geometry(envelope.geometry)
    for key, value in envelope.attributes.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise EnvelopeError("must be a finite number", field=f"attributes.{key}")
    return envelope


_DEPTH = {"Point": 1, "MultiPoint": 2, "LineString": 2, "MultiLineString": 3,
          "Polygon": 3, "MultiPolygon": 4}
_GEOMETRY_KEYS = frozenset({"type", "coordinates", "bbox"})
MAX_VERTICES = 20_000
"""Vertices one geometry may have (a district polygon has a few thousand)."""


def _position(value: Any) -> None:
    if not isinstance(value, list) or not 2 <= len(value) <= 3:
        raise EnvelopeError(f"{_short(value)} is not a position [lon, lat]",
                            field="geometry.coordinates")
    lon, lat = value[0], value[1]
    # exact types keep out bools and numeric strings; NaN fails every comparison
    if (type(lon) not in (int, float) or type(lat) not in (int, float)
            or not (-180 <= lon <= 180 and -90 <= lat <= 90)
            or (len(value) == 3 and (type(value[2]) not in (int, float)
                                     or not math.isfinite(value[2])))):
        raise EnvelopeError(f"({lon!r}, {lat!r}) is not a finite lon/lat in range",
                            field="geometry.coordinates")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _positions(value: Any, depth: int, kind: str, counted: list[int]) -> None:
    """Check nested coordinate lists ``depth`` levels deep, the last being positions."""
    if depth == 1:
        _position(value)
        counted[0] += 1
        if counted[0] > MAX_VERTICES:
            raise EnvelopeError(f"more than {MAX_VERTICES} vertices",
                                field="geometry.coordinates")
        return
    if not isinstance(value, list) or not value:
        raise EnvelopeError(f"a {kind} needs non-empty nested lists of positions, got "
                            f"{_short(value)}", field="geometry.coordinates")
    for item in value:
        _positions(item, depth - 1, kind, counted)
    if depth == 2 and kind in ("LineString", "MultiLineString") and len(value) < 2:
        raise EnvelopeError("a line needs at least 2 positions", field="geometry.coordinates")
    if depth == 2 and kind in ("Polygon", "MultiPolygon") and (
            len(value) < 4 or value[0] != value[-1]):
        raise EnvelopeError("a polygon ring needs at least 4 positions, the last equal "
                                "to the first", field="geometry.coordinates")


def check_geometry(geometry: dict[str, Any]) -> None:
    """A GeoJSON geometry (RFC 7946): a known type, coordinates nested as the type says,
    finite lon/lat in range, lines of ≥ 2 positions, closed rings of ≥ 4, at most
    :data:`MAX_VERTICES` vertices, valid polygons (no self-intersection), and no
    members beyond ``type``, ``coordinates`` and ``bbox``."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Point" and len(geometry) == 2:  # the hot path: most events are points
        _position(coords)
        return
    if kind not in _DEPTH:
        raise EnvelopeError(f"unsupported GeoJSON type {_short(kind)}", field="geometry.type")
    extra = set(geometry) - _GEOMETRY_KEYS
    if extra:
        raise EnvelopeError(f"unexpected member(s) {', '.join(sorted(map(str, extra)))}",
                            field="geometry")
    if coords is None:
        raise EnvelopeError("missing", field="geometry.coordinates")
    _positions(coords, _DEPTH[kind], kind, [0])
    if kind in ("Polygon", "MultiPolygon"):
        shape = shapely.geometry.shape(geometry)
        if not shape.is_valid:
            raise EnvelopeError(f"invalid polygon: {shapely.validation.explain_validity(shape)}",
                                field="geometry.coordinates")


def uuid5_text(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` without building UUID objects (hot path)."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def envelope_id(source: str, source_record_id: str) -> str:
    """Deterministic envelope id for a source record: replays yield the same id."""
    return uuid5_text(_ID_NAMESPACE, f"{source}\x1f{source_record_id}")


def make_envelope(
    *,
    source: str,
    source_record_id: str,
    domain: str,
    kind: str,
    time: datetime,
    entity_id: str,
    geometry: dict[str, Any] | None = None,
    attributes: dict[str, AttributeValue] | None = None,
    received_at: datetime | None = None,
    origin: str | None = None,
) -> Envelope:
    """Build and validate an envelope; raises :class:`EnvelopeError` naming the field.
    Lone surrogates (invalid Unicode, e.g. from a JSON ``"\\ud800"`` escape) cannot be
    encoded: in text attributes each becomes U+FFFD; in an identifying field the record
    is refused."""
    if domain not in DOMAINS:
        raise EnvelopeError(f"{domain!r} is not one of {', '.join(DOMAINS)}", field="domain")
    if time.tzinfo is None:
        raise EnvelopeError("must be timezone-aware", field="time")
    for name, value in (("source", source), ("kind", kind), ("entity_id", entity_id),
                        ("source_record_id", source_record_id)):
        if not value and name != "source_record_id":
            raise EnvelopeError("must not be empty", field=name)
        if has_surrogate(value):
            raise EnvelopeError("contains a lone surrogate (invalid Unicode)", field=name)
    if attributes:
        attributes = {key: replace_surrogates(value) if isinstance(value, str) else value
                      for key, value in attributes.items()}
    return validate_envelope(Envelope(
        id=envelope_id(source, source_record_id),
        source=source,
        domain=domain,  # type: ignore[arg-type]
        kind=kind,
        time=time.astimezone(UTC),
        received_at=(received_at or datetime.now(UTC)).astimezone(UTC),
        entity_id=entity_id,
        geometry=geometry,
        attributes=attributes or {},
        origin=origin,
    ))


_SURROGATE = re.compile("[\ud800-\udfff]")


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (which no encoder can write)."""
    return not text.isascii() and _SURROGATE.search(text) is not None


def replace_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD."""
    return _SURROGATE.sub("\ufffd", text) if has_surrogate(text) else text
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Envelope)


def encode_envelope(envelope: Envelope) -> bytes:
    """JSON bytes of one envelope (the public one-record-per-message form)."""
    return _encoder.encode(envelope)


def decode_envelope(payload: bytes, *, locator: str | None = None) -> Envelope:
    """Parse and validate one envelope; errors name the field and ``locator``."""
    try:
        return validate_envelope(_decoder.decode(payload))
    except EnvelopeError as exc:
        raise exc.with_locator(locator) if locator else exc from None
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `")
        field = path.rstrip("`").removeprefix("$.") or None
        raise EnvelopeError(message, field=field, locator=locator) from None
    except msgspec.DecodeError as exc:
        raise EnvelopeError(_undecodable(payload, exc), locator=locator) from None
    except UnicodeDecodeError as exc:
        raise EnvelopeError(f"not valid UTF-8 at byte {exc.start}",
                            locator=locator) from None
    except RecursionError:
        raise EnvelopeError("JSON nested too deeply", locator=locator) from None


def _undecodable(payload: bytes, exc: msgspec.DecodeError) -> str:
    """Why ``payload`` is no JSON: invalid UTF-8 at a byte (msgspec ≥ 0.23 reports it as a
    JSON error without the position), or msgspec's own words."""
    if "UTF-8" in str(exc):
        try:
            bytes(payload).decode("utf-8")
        except UnicodeDecodeError as bad:
            return f"not valid UTF-8 at byte {bad.start}"
    return f"not valid JSON: {exc}"
