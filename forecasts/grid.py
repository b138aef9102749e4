"""Forecast grids: a model's predictions precomputed on a regular UTC time grid, so the
stream scores events by array lookup and never calls a model per event.

Example:
    >>> import numpy as np
    >>> grid = ForecastGrid(series_key="i94:volume", model_id="i94:volume:prophet",
    ...     model_version="abc", start=0.0, step=3600.0, yhat=np.array([1.0, 5.0, 9.0]),
    ...     lower=np.array([0.0, 4.0, 8.0]), upper=np.array([2.0, 6.0, 10.0]))
    >>> grid.first_crossing(np.array([0.0, 3600.0]), "upper", ">", 5.5, 7200.0).tolist()
    [1, 1]
    >>> grid.nearest(np.array([3000.0, 9e9])).tolist()
    [1, -1]
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


@dataclass
class ForecastGrid:
    """``yhat``/``lower``/``upper`` at ``start + k * step`` (epoch seconds, UTC)."""

    series_key: str
    model_id: str
    model_version: str
    start: float
    step: float
    yhat: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    _crossings: dict[tuple[str, str, float], Any] = field(
        default_factory=dict, repr=False)

    @classmethod
    def from_frame(cls, series_key: str, model_id: str, model_version: str,
                   frame: pd.DataFrame, timezone: str | None = None) -> ForecastGrid:
        """From a model's ``predict`` output (index = times; local ``timezone`` if the
        history was local wall-clock time)."""
        index = pd.DatetimeIndex(frame.index)
        if index.tz is None:
            index = index.tz_localize(timezone or "UTC", ambiguous="NaT",
                                      nonexistent="NaT")
        seconds = (index.tz_convert("UTC") - pd.Timestamp(0, tz="UTC")).total_seconds()
        valid = ~np.isnan(seconds.to_numpy())
        start = float(seconds[valid][0])
        step = float(np.median(np.diff(seconds[valid]))) if valid.sum() > 1 else 3600.0
        slots = np.rint((seconds.to_numpy()[valid] - start) / step).astype(np.int64)
        size = int(slots.max()) + 1
        arrays = []
        for column in ("yhat", "yhat_lower", "yhat_upper"):
            values = np.full(size, np.nan)
            values[slots] = frame[column].to_numpy(dtype=float)[valid]
            arrays.append(values)
        return cls(series_key, model_id, model_version, start, step, *arrays)

    def to_dict(self) -> dict[str, Any]:
        def listed(a: NDArray[np.float64]) -> list[float | None]:
            return [None if np.isnan(v) else round(float(v), 4) for v in a]

        return {"series_key": self.series_key, "model_id": self.model_id,
                "model_version": self.model_version, "start": self.start, "step": self.step,
                "yhat": listed(self.yhat), "lower": listed(self.lower),
                "upper": listed(self.upper)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ForecastGrid:
        def array(values: list[float | None]) -> NDArray[np.float64]:
            return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

        return cls(data["series_key"], data["model_id"], data["model_version"],
                   float(data["start"]), float(data["step"]), array(data["yhat"]),
                   array(data["lower"]), array(data["upper"]))

    @property
    def end(self) -> float:
        return self.start + self.step * (len(self.yhat) - 1)

    def time_of(self, slot: int) -> float:
        return self.start + self.step * slot

    def nearest(self, times: NDArray[np.float64]) -> NDArray[np.int64]:
        """Grid slot nearest each time, or -1 outside the grid."""
        slots = np.rint((times - self.start) / self.step)
        ok = (slots >= 0) & (slots < len(self.yhat)) & ~np.isnan(slots)
        return np.where(ok, np.nan_to_num(slots), -1).astype(np.int64)

    def bound(self, name: str) -> NDArray[np.float64]:
        return {"yhat": self.yhat, "upper": self.upper, "lower": self.lower}[name]

    def _crossing_tables(self, bound: str, op: str, value: float,
                         ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(first crossing slot at or after each slot, start of the crossing episode
        holding each slot), computed once per (bound, op, value)."""
        key = (bound, op, value)
        tables = self._crossings.get(key)
        if tables is None:
            with np.errstate(invalid="ignore"):
                crosses = _OPS[op](self.bound(bound), value)
            following = np.full(len(crosses) + 1, -1, dtype=np.int64)
            for k in range(len(crosses) - 1, -1, -1):
                following[k] = k if crosses[k] else following[k + 1]
            starts = np.full(len(crosses), -1, dtype=np.int64)
            for k in range(len(crosses)):
                if crosses[k]:
                    starts[k] = starts[k - 1] if k and crosses[k - 1] else k
            tables = self._crossings[key] = (following, starts)
        return tables

    def episode_start(self, slot: int, bound: str, op: str, value: float) -> int:
        """First slot of the run of crossing slots that holds ``slot``."""
        return int(self._crossing_tables(bound, op, value)[1][slot])

    def first_crossing(self, times: NDArray[np.float64], bound: str, op: str,
                       value: float, horizon: float) -> NDArray[np.int64]:
        """For each time, the first grid slot at or after it, within ``horizon`` seconds,
        where ``bound <op> value``; -1 if none. One reverse scan per (bound, op, value),
        then a vectorised lookup per batch."""
        following = self._crossing_tables(bound, op, value)[0]
        first = np.ceil((times - self.start) / self.step)
        inside = (first <= len(self.yhat)) & (times <= self.end) & ~np.isnan(first)
        slot = np.clip(np.nan_to_num(first), 0, len(self.yhat)).astype(np.int64)
        found = np.where(inside, following[slot], -1)
        late = (self.start + self.step * found) - times > horizon
        return np.where((found >= 0) & ~late, found, -1)


class ForecastBook:
    """The forecast grids the rules use, newest model version per series.

    ``refresh`` swaps in grids of newer versions from the registry (the worker calls it
    on a timer), so retrained models take effect without a restart.

    Example:
        >>> book = ForecastBook(); book.get("nothing") is None
        True
    """

    def __init__(self, grids: dict[str, ForecastGrid] | None = None) -> None:
        self.grids: dict[str, ForecastGrid] = dict(grids or {})

    def get(self, series_key: str) -> ForecastGrid | None:
        return self.grids.get(series_key)

    def put(self, grid: ForecastGrid) -> None:
        self.grids[grid.series_key] = grid

    def refresh(self, newest: dict[str, tuple[str, Callable[[], ForecastGrid | None]]],
                ) -> list[str]:
        """``newest`` maps series → (version, loader); returns the series swapped."""
        changed = []
        for key, (version, load) in newest.items():
            current = self.grids.get(key)
            if current is not None and current.model_version == version:
                continue
            grid = load()
            if grid is not None:
                self.grids[key] = grid
                changed.append(key)
        return changed
