"""A column view of a batch of envelopes, built once per batch for vectorised rules.

Example:
    >>> from datetime import datetime, timezone
    >>> from citywatch.streams.envelope import make_envelope
    >>> from citywatch.geo.zones import ZoneIndex
    >>> evs = [make_envelope(source="s", source_record_id=str(i), domain="traffic",
    ...        kind="traffic.volume", time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    ...        entity_id="atr", attributes={"volume": v}) for i, v in enumerate([1, "x"])]
    >>> EventFrame(evs, ZoneIndex([])).column("volume").tolist()
    [1.0, nan]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray

from citywatch.geo.zones import ZoneIndex
from citywatch.streams.envelope import AttributeValue, Envelope


def _number(value: AttributeValue) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return math.nan


def _location(geometry: dict[str, Any] | None) -> tuple[float, float]:
    if geometry is None:
        return (math.nan, math.nan)
    if geometry.get("type") == "Point":
        coords = geometry["coordinates"]
        return (coords[0], coords[1])
    centre = shapely.geometry.shape(geometry).representative_point()
    return (centre.x, centre.y)


class EventFrame:
    """Columns of one batch: domain, kind, location, zones per layer, numeric attributes."""

    def __init__(self, events: Sequence[Envelope], zones: ZoneIndex) -> None:
        self.events = events
        self.size = len(events)
        self.domain = np.array([e.domain for e in events], dtype=object)
        self.kind = np.array([e.kind for e in events], dtype=object)
        coords = np.array([_location(e.geometry) for e in events],
                          dtype=np.float64).reshape(-1, 2)
        self.lon, self.lat = coords[:, 0], coords[:, 1]
        self.zones: dict[str, NDArray[np.int64]] = zones.lookup(self.lon, self.lat)
        self._columns: dict[str, NDArray[np.float64]] = {}
        self.derived: dict[Any, Any] = {}  # per-frame results other conditions share

    @property
    def times(self) -> NDArray[np.float64]:
        """Event times as epoch seconds."""
        col = self.derived.get("times")
        if col is None:
            col = np.fromiter((e.time.timestamp() for e in self.events), dtype=np.float64,
                              count=self.size)
            self.derived["times"] = col
        return col

    def text_column(self, attribute: str) -> NDArray[np.object_]:
        """Values of ``attribute`` as objects (``None`` where missing)."""
        key = ("text", attribute)
        col = self.derived.get(key)
        if col is None:
            col = np.array([e.attributes.get(attribute) for e in self.events], dtype=object)
            self.derived[key] = col
        return col

    def column(self, attribute: str) -> NDArray[np.float64]:
        """Numeric values of ``attribute``; NaN where missing or not a number."""
        col = self._columns.get(attribute)
        if col is None:
            col = np.fromiter((_number(e.attributes.get(attribute)) for e in self.events),
                              dtype=np.float64, count=self.size)
            self._columns[attribute] = col
        return col
