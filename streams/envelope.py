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
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
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


_GEOJSON_TYPES = frozenset({"Point", "LineString", "Polygon", "MultiPoint",
                            "MultiLineString", "MultiPolygon"})


def check_geometry(geometry: dict[str, Any]) -> None:
    """A GeoJSON geometry: known type; a Point has finite lon/lat in range."""
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "Point":
        try:
            lon, lat = coords[0], coords[1]  # type: ignore[index]
        except (TypeError, IndexError, KeyError):
            raise EnvelopeError("a Point needs [lon, lat]",
                                field="geometry.coordinates") from None
        # exact types keep out bools and numeric strings; NaN fails every comparison
        if (type(lon) not in (int, float) or type(lat) not in (int, float)
                or not (-180 <= lon <= 180 and -90 <= lat <= 90)):
            raise EnvelopeError(f"({lon!r}, {lat!r}) is not a finite lon/lat in range",
                                field="geometry.coordinates")
    elif kind not in _GEOJSON_TYPES:
        raise EnvelopeError(f"unsupported GeoJSON type {kind!r}", field="geometry.type")
    elif coords is None:
        raise EnvelopeError("missing", field="geometry.coordinates")


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
) -> Envelope:
    """Build and validate an envelope; raises :class:`EnvelopeError` naming the field."""
    if domain not in DOMAINS:
        raise EnvelopeError(f"{domain!r} is not one of {', '.join(DOMAINS)}", field="domain")
    if time.tzinfo is None:
        raise EnvelopeError("must be timezone-aware", field="time")
    for name, value in (("source", source), ("kind", kind), ("entity_id", entity_id)):
        if not value:
            raise EnvelopeError("must not be empty", field=name)
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
    ))


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
        raise EnvelopeError(f"not valid JSON: {exc}", locator=locator) from None
