"""Micro-batch framing of the internal ``events`` topic, in columns.

Faust spends ~110 µs per Kafka message whatever the agent does, so the internal hot path
carries many envelopes per message. Ingest validates each raw record once and writes the
frame **column-wise** (ids, domains, kinds, times, locations and every numeric attribute
as packed float64 arrays, text attributes as lists), plus each envelope's JSON for the
few rows that become alerts. The rules stage then works on numpy views of those bytes
without building a Python object per event. Public topics (``raw.*``, ``alerts``, team
topics) keep one record per message.

Example:
    >>> from datetime import datetime, timezone
    >>> from citywatch.streams.envelope import make_envelope
    >>> e = make_envelope(source="s", source_record_id="1", domain="traffic",
    ...     kind="traffic.volume", time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    ...     entity_id="atr-301", attributes={"volume": 5000, "lane": "west"})
    >>> frame = decode_frame(encode_batch([e]))
    >>> frame.ids == [e.id], frame.number("volume").tolist(), frame.texts["lane"]
    (True, [5000.0], ['west'])
    >>> frame.envelope(0) == e
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np
import shapely
from numpy.typing import NDArray

from citywatch.streams.envelope import DOMAINS, Envelope

DOMAIN_CODES: dict[str, int] = {d: i for i, d in enumerate(DOMAINS)}
_envelope_decoder = msgspec.json.Decoder(Envelope)
_envelope_encoder = msgspec.json.Encoder()


def location(geometry: dict[str, Any] | None) -> tuple[float, float]:
    """A point for zone lookups: the Point itself, or a point inside other geometries."""
    if geometry is None:
        return (math.nan, math.nan)
    if geometry.get("type") == "Point":
        coords = geometry["coordinates"]
        return (coords[0], coords[1])
    centre = shapely.geometry.shape(geometry).representative_point()
    return (centre.x, centre.y)


class ColumnFrame(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One ``events`` message: validated envelopes in arrival order, as columns.

    ``origins[i]`` / ``offsets[i]`` say which raw ``topic/partition`` and offset event
    ``i`` came from (empty when not read from Kafka): stateful rules use them to apply
    an event once even when ingest frames it again after a crash.
    """

    ids: list[str]
    entity_ids: list[str]
    domains: bytes  # uint8 index into DOMAINS
    kind_names: list[str]
    kinds: bytes  # uint16 index into kind_names
    times: bytes  # float64 epoch seconds
    lons: bytes  # float64, NaN without a location
    lats: bytes
    numbers: dict[str, bytes]  # float64 per attribute, NaN where missing or not a number
    texts: dict[str, list[str | None]]
    envelopes: list[bytes]  # each envelope's JSON
    origins: list[str] = []
    offsets: list[int] = []
    record_origins: list[str | None] = []  # each envelope's origin (file:line, ...)
    # a keyed frame (``events.keyed``): the ``events`` partition it was routed from and
    # that partition's stream time (the newest event time it has evaluated) when sent
    source_partition: int = -1
    watermark: float = math.nan

    @property
    def size(self) -> int:
        return len(self.ids)

    def array(self, raw: bytes, dtype: Any = np.float64) -> NDArray[Any]:
        return np.frombuffer(raw, dtype=dtype)

    def number(self, attribute: str) -> NDArray[np.float64]:
        raw = self.numbers.get(attribute)
        return np.full(self.size, np.nan) if raw is None else np.frombuffer(raw, np.float64)

    def envelope(self, i: int) -> Envelope:
        """Event ``i`` as an envelope (decoded on demand: alerts and stateful rules)."""
        return _envelope_decoder.decode(self.envelopes[i])

    @property
    def events(self) -> list[Envelope]:
        return [self.envelope(i) for i in range(self.size)]


def select_rows(frame: ColumnFrame, rows: Sequence[int] | NDArray[np.intp]) -> ColumnFrame:
    """The ``rows`` of ``frame``, in the order given (a column no chosen row has a value
    in may stay, empty: NaN or ``None`` throughout).

    Example:
        >>> from datetime import datetime, timezone
        >>> from citywatch.streams.envelope import make_envelope
        >>> evs = [make_envelope(source="s", source_record_id=str(i), domain="traffic",
        ...     kind="traffic.volume", time=datetime(2024, 1, 1, tzinfo=timezone.utc),
        ...     entity_id=f"atr-{i}", attributes={"volume": i}) for i in range(3)]
        >>> part = select_rows(decode_frame(encode_batch(evs)), [2, 0])
        >>> part.entity_ids, part.number("volume").tolist()
        (['atr-2', 'atr-0'], [2.0, 0.0])
    """
    index = np.asarray(rows, dtype=np.intp)
    listed = index.tolist()

    def pick(raw: bytes, dtype: Any) -> bytes:
        return np.frombuffer(raw, dtype=dtype)[index].tobytes()

    def pick_list(values: list[Any]) -> list[Any]:
        return [values[i] for i in listed] if values else []

    return ColumnFrame(
        ids=pick_list(frame.ids), entity_ids=pick_list(frame.entity_ids),
        domains=pick(frame.domains, np.uint8), kind_names=frame.kind_names,
        kinds=pick(frame.kinds, np.uint16), times=pick(frame.times, np.float64),
        lons=pick(frame.lons, np.float64), lats=pick(frame.lats, np.float64),
        numbers={k: pick(v, np.float64) for k, v in frame.numbers.items()},
        texts={k: pick_list(v) for k, v in frame.texts.items()},
        envelopes=pick_list(frame.envelopes), origins=pick_list(frame.origins),
        offsets=pick_list(frame.offsets), record_origins=pick_list(frame.record_origins),
        source_partition=frame.source_partition, watermark=frame.watermark)


def take_rows(frame: ColumnFrame, rows: Sequence[int], *, origin: str, offset: int,
              source_partition: int, watermark: float) -> ColumnFrame:
    """The ``rows`` of ``frame`` (in order) as a keyed frame routed from
    ``source_partition``: every row's origin becomes ``origin`` at ``offset`` (the
    ``events`` frame it came from), so a frame routed again after a crash is applied once.

    Example:
        >>> from datetime import datetime, timezone
        >>> from citywatch.streams.envelope import make_envelope
        >>> evs = [make_envelope(source="s", source_record_id=str(i), domain="traffic",
        ...     kind="traffic.volume", time=datetime(2024, 1, 1, tzinfo=timezone.utc),
        ...     entity_id=f"atr-{i}", attributes={"volume": i}) for i in range(3)]
        >>> part = take_rows(decode_frame(encode_batch(evs)), [0, 2], origin="events/1",
        ...                  offset=7, source_partition=1, watermark=1704067200.0)
        >>> part.entity_ids, part.number("volume").tolist(), part.offsets
        (['atr-0', 'atr-2'], [0.0, 2.0], [7, 7])
    """
    return msgspec.structs.replace(
        select_rows(frame, rows), origins=[origin] * len(rows), offsets=[offset] * len(rows),
        source_partition=source_partition, watermark=watermark)


def join_frames(frames: Sequence[ColumnFrame]) -> ColumnFrame:
    """One frame of the rows of ``frames``, in order (kind codes renumbered; a column
    some frames lack is NaN or ``None`` in their rows).

    Example:
        >>> from datetime import datetime, timezone
        >>> from citywatch.streams.envelope import make_envelope
        >>> def ev(i, kind, attributes):
        ...     return make_envelope(source="s", source_record_id=str(i), domain="traffic",
        ...         kind=kind, time=datetime(2024, 1, 1, tzinfo=timezone.utc),
        ...         entity_id=f"e{i}", attributes=attributes)
        >>> both = join_frames([build_frame([ev(1, "a", {"v": 1})]),
        ...                     build_frame([ev(2, "b", {"lane": "west"})])])
        >>> both.kind_names, both.number("v").tolist(), both.texts["lane"]
        (['a', 'b'], [1.0, nan], [None, 'west'])
    """
    sizes = [f.size for f in frames]
    total = sum(sizes)
    starts = np.cumsum([0, *sizes]).tolist()
    kind_names = list(dict.fromkeys(k for f in frames for k in f.kind_names))
    code = {name: i for i, name in enumerate(kind_names)}
    numbers: dict[str, NDArray[np.float64]] = {}
    texts: dict[str, list[str | None]] = {}
    kinds = np.empty(total, dtype=np.uint16)
    for f, start, stop in zip(frames, starts, starts[1:], strict=False):
        renumber = np.array([code[k] for k in f.kind_names] or [0], dtype=np.uint16)
        kinds[start:stop] = renumber[np.frombuffer(f.kinds, dtype=np.uint16)]
        for key, raw in f.numbers.items():
            if key not in numbers:
                numbers[key] = np.full(total, math.nan)
            numbers[key][start:stop] = np.frombuffer(raw, dtype=np.float64)
        for key, values in f.texts.items():
            if key not in texts:
                texts[key] = [None] * total
            texts[key][start:stop] = values

    def joined(name: str) -> list[Any]:
        return [v for f in frames for v in getattr(f, name)]

    def raw(name: str) -> bytes:
        return b"".join(getattr(f, name) for f in frames)

    return ColumnFrame(
        ids=joined("ids"), entity_ids=joined("entity_ids"), domains=raw("domains"),
        kind_names=kind_names, kinds=kinds.tobytes(), times=raw("times"),
        lons=raw("lons"), lats=raw("lats"),
        numbers={k: v.tobytes() for k, v in numbers.items()}, texts=texts,
        envelopes=joined("envelopes"),
        origins=joined("origins") if all(f.origins for f in frames) else [],
        offsets=joined("offsets") if all(f.offsets for f in frames) else [],
        record_origins=joined("record_origins"))


def encode_frame(frame: ColumnFrame) -> bytes:
    """MessagePack bytes of a built frame."""
    return _encoder.encode(frame)


def build_frame(events: Sequence[Envelope], raws: Sequence[bytes] | None = None,
                origins: Sequence[str] = (), offsets: Sequence[int] = ()) -> ColumnFrame:
    """Columns of ``events``; ``raws`` are their JSON (re-encoded when not given)."""
    # plain lists filled in one pass, made arrays once: a numpy item assignment per
    # value cost more than the rest of the loop
    n = len(events)
    nan = math.nan
    kind_index: dict[str, int] = {}
    kinds = [0] * n
    domains = [0] * n
    times = [0.0] * n
    lons = [nan] * n
    lats = [nan] * n
    numbers: dict[str, list[float]] = {}
    texts: dict[str, list[str | None]] = {}
    for i, e in enumerate(events):
        domains[i] = DOMAIN_CODES[e.domain]
        kinds[i] = kind_index.setdefault(e.kind, len(kind_index))
        times[i] = e.time.timestamp()
        geometry = e.geometry
        if geometry is not None:
            if geometry.get("type") == "Point":
                coords = geometry["coordinates"]
                lons[i], lats[i] = coords[0], coords[1]
            else:
                lons[i], lats[i] = location(geometry)
        for key, value in e.attributes.items():
            kind = type(value)
            if kind is float or kind is int or kind is bool:
                column = numbers.get(key)
                if column is None:
                    column = numbers[key] = [nan] * n
                column[i] = value
            elif kind is str:
                text = texts.get(key)
                if text is None:
                    text = texts[key] = [None] * n
                text[i] = value
    if raws is None:
        raws = [_envelope_encoder.encode(e) for e in events]
    return ColumnFrame(
        ids=[e.id for e in events], entity_ids=[e.entity_id for e in events],
        domains=np.array(domains, dtype=np.uint8).tobytes(), kind_names=list(kind_index),
        kinds=np.array(kinds, dtype=np.uint16).tobytes(),
        times=np.array(times, dtype=np.float64).tobytes(),
        lons=np.array(lons, dtype=np.float64).tobytes(),
        lats=np.array(lats, dtype=np.float64).tobytes(),
        numbers={k: np.array(v, dtype=np.float64).tobytes() for k, v in numbers.items()},
        texts=texts,
        envelopes=list(raws), origins=list(origins),
        offsets=list(offsets), record_origins=[e.origin for e in events])


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ColumnFrame)


def encode_batch(events: Sequence[Envelope], origins: Sequence[str] = (),
                 offsets: Sequence[int] = (), raws: Sequence[bytes] | None = None) -> bytes:
    """MessagePack bytes for one ``events`` topic message."""
    return _encoder.encode(build_frame(events, raws, origins, offsets))


def decode_frame(payload: bytes) -> ColumnFrame:
    """One ``events`` topic message."""
    return _decoder.decode(payload)


def decode_batch(payload: bytes) -> list[Envelope]:
    """Envelopes from one ``events`` topic message."""
    return decode_frame(payload).events
