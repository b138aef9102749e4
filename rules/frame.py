"""The column view of one batch that rules evaluate: numpy arrays over a
:class:`~citywatch.streams.batch.ColumnFrame`, zones looked up once per layer.

Example:
    >>> from datetime import datetime, timezone
    >>> from citywatch.streams.envelope import make_envelope
    >>> from citywatch.geo.zones import ZoneIndex
    >>> evs = [make_envelope(source="s", source_record_id=str(i), domain="traffic",
    ...        kind="traffic.volume", time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    ...        entity_id="atr", attributes={"volume": v}) for i, v in enumerate([1, "x"])]
    >>> EventFrame.from_envelopes(evs, ZoneIndex([])).column("volume").tolist()
    [1.0, nan]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citywatch.geo.zones import ZoneIndex
from citywatch.streams.batch import DOMAIN_CODES, ColumnFrame, build_frame
from citywatch.streams.envelope import Envelope


class EventFrame:
    """Columns of one batch: domain and kind codes, time, location, zones per layer,
    numeric and text attributes; envelopes are decoded only for the rows that need them.
    """

    def __init__(self, columns: ColumnFrame, zones: ZoneIndex,
                 events: Sequence[Envelope] | None = None) -> None:
        self.columns = columns
        self.size = columns.size
        self.ids = columns.ids
        self.entity_ids = columns.entity_ids
        self.domain = np.frombuffer(columns.domains, dtype=np.uint8)
        self.kind = np.frombuffer(columns.kinds, dtype=np.uint16)
        self.kind_codes = {name: code for code, name in enumerate(columns.kind_names)}
        self.times = np.frombuffer(columns.times, dtype=np.float64)
        self.lon = np.frombuffer(columns.lons, dtype=np.float64)
        self.lat = np.frombuffer(columns.lats, dtype=np.float64)
        # sensors repeat their coordinates: geometry work is done once per distinct place
        places, self.place = np.unique(self.lon + 1j * self.lat, return_inverse=True)
        self.place_lon, self.place_lat = places.real.copy(), places.imag.copy()
        self.zones: dict[str, NDArray[np.int64]] = {
            layer: found[self.place]
            for layer, found in zones.lookup(self.place_lon, self.place_lat).items()}
        self.derived: dict[Any, Any] = {}  # per-frame results other conditions share
        self._events: list[Envelope | None] = (list(events) if events is not None
                                               else [None] * self.size)

    @classmethod
    def from_envelopes(cls, events: Sequence[Envelope], zones: ZoneIndex) -> EventFrame:
        return cls(build_frame(events, raws=[b""] * len(events)), zones, events)

    def per_place(self, values: NDArray[Any]) -> NDArray[Any]:
        """Expand values computed per distinct place (``place_lon``/``place_lat``) to
        one per event."""
        return values[self.place]

    def origin(self, i: int) -> str:
        """Where row ``i`` came from: the connector's locator (``file.csv:17``) and the
        raw ``topic/partition@offset`` ingest read it at, when known ("" otherwise)."""
        columns = self.columns
        parts = []
        if columns.record_origins and columns.record_origins[i]:
            parts.append(columns.record_origins[i])
        if columns.origins and columns.origins[i]:
            parts.append(f"{columns.origins[i]}@{columns.offsets[i]}")
        return " ".join(parts)

    def origins_of(self, ids: list[str], known: dict[str, str] | None = None) -> list[str]:
        """The origin of each of ``ids`` (``known`` first, then rows of this frame)."""
        index = self.cached("id_index", lambda: {e: n for n, e in enumerate(self.ids)})
        known = known or {}
        return [known.get(e) or (self.origin(index[e]) if e in index else "") for e in ids]

    def event(self, i: int) -> Envelope:
        """Row ``i`` as an envelope (decoded once, on demand)."""
        event = self._events[i]
        if event is None:
            event = self._events[i] = self.columns.envelope(i)
        return event

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per frame under ``key`` (results conditions share)."""
        value = self.derived.get(key)
        if value is None:
            value = self.derived[key] = compute()
        return value

    def domain_is(self, domain: str) -> NDArray[np.bool_]:
        return self.cached(("domain", domain), lambda: self.domain == DOMAIN_CODES[domain])

    def entity_is(self, entity: str) -> NDArray[np.bool_]:
        ids = self.cached("entities", lambda: np.array(self.entity_ids, dtype=object))
        return ids == entity

    def kind_in(self, kinds: Sequence[str]) -> NDArray[np.bool_]:
        codes = [self.kind_codes[k] for k in kinds if k in self.kind_codes]
        if not codes:
            return np.zeros(self.size, dtype=bool)
        return np.isin(self.kind, codes)

    def text_column(self, attribute: str) -> list[str | None]:
        """Text values of ``attribute`` (``None`` where missing or not text)."""
        return self.columns.texts.get(attribute) or [None] * self.size

    def column(self, attribute: str) -> NDArray[np.float64]:
        """Numeric values of ``attribute``; NaN where missing or not a number."""
        return self.cached(("column", attribute), lambda: self.columns.number(attribute))

    @property
    def time_list(self) -> list[float]:
        """:attr:`times` as Python floats, for per-event loops (indexing a list is
        several times cheaper than reading a numpy scalar)."""
        return self.cached("time_list", self.times.tolist)

    def column_list(self, attribute: str) -> list[float]:
        """:meth:`column` as Python floats, for per-event loops."""
        return self.cached(("column_list", attribute), lambda: self.column(attribute).tolist())

    def known(self, attribute: str) -> NDArray[np.bool_]:
        """Where ``attribute`` has a number."""
        return self.cached(("known", attribute), lambda: ~np.isnan(self.column(attribute)))
