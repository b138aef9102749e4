"""Regular time series from history files, with NA, duplicate timestamps and gaps made
explicit.

Example:
    >>> import pandas as pd, io
    >>> csv = io.StringIO("t,v\\n2024-01-01 00:00,1\\n2024-01-01 00:00,3\\n2024-01-01 02:00,NA\\n")
    >>> series, report = load_series(csv, ["t"], "v", freq="h")
    >>> series.tolist()[0], report.duplicates, report.missing
    (2.0, 1, 2)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import IO, Any

import pandas as pd

from citywatch.streams.batch import decode_frame


class SeriesError(ValueError):
    """A history file that cannot become a series (names the column and the problem)."""


@dataclass(frozen=True)
class SeriesReport:
    """What was done to make the series regular."""

    rows: int
    duplicates: int  # rows sharing a timestamp with an earlier row (averaged)
    duplicated_timestamps: int  # timestamps that appear more than once
    missing: int  # points of the regular grid with no value (NA or gap)
    gaps: int  # runs of missing points
    largest_gap_hours: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_series(source: str | IO[str], time_columns: list[str], value_column: str, *,
                freq: str = "h") -> tuple[pd.Series, SeriesReport]:
    """A series on a regular ``freq`` grid: duplicate timestamps averaged, NA and gaps
    kept as NaN (never interpolated)."""
    frame = pd.read_csv(source, na_values=["NA", ""], keep_default_na=True, low_memory=False)
    for column in [*time_columns, value_column]:
        if column not in frame.columns:
            raise SeriesError(f"no column '{column}' (have: {', '.join(frame.columns)})")
    if len(time_columns) == 1:
        stamps = pd.to_datetime(frame[time_columns[0]], errors="coerce")
    else:
        parts = frame[time_columns].rename(columns=str.lower)
        stamps = pd.to_datetime(parts, errors="coerce")
    if stamps.isna().any():
        row = int(stamps.isna().to_numpy().nonzero()[0][0]) + 2
        raise SeriesError(f"line {row}: '{', '.join(time_columns)}' is not a time")
    values = pd.to_numeric(frame[value_column], errors="coerce")
    return regular_series(stamps, values, value_column, freq=freq)


def regular_series(stamps: pd.Series, values: pd.Series, name: str, *,
                   freq: str = "h") -> tuple[pd.Series, SeriesReport]:
    """Average duplicated timestamps and lay the values on a regular ``freq`` grid (NA
    and gaps stay NaN), with the report of what was done."""
    data = pd.DataFrame({"ds": stamps.to_numpy(), "y": values.to_numpy()})
    duplicates = int(data["ds"].duplicated().sum())
    repeated = int(data["ds"].duplicated(keep=False).groupby(data["ds"]).any().sum())
    series = data.groupby("ds")["y"].mean().sort_index()
    grid = pd.date_range(series.index.min(), series.index.max(), freq=freq)
    series = series.reindex(grid)
    missing = series.isna()
    runs = (missing != missing.shift()).cumsum()[missing]
    sizes = runs.value_counts()
    step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).total_seconds() / 3600
    report = SeriesReport(rows=len(data), duplicates=duplicates,
                          duplicated_timestamps=repeated, missing=int(missing.sum()),
                          gaps=int(len(sizes)),
                          largest_gap_hours=float(sizes.max() * step) if len(sizes) else 0.0)
    series.name = name
    return series, report


def series_from_events(frames: Iterable[bytes], *, entity: str, attribute: str,
                       freq: str = "h", timezone: str | None = None,
                       ) -> tuple[pd.Series, SeriesReport]:
    """The history of one entity's ``attribute`` from the ``events`` topic's frames (every
    partition, start to end, as the stream layer reads them); times in ``timezone``
    wall-clock (UTC if None), like a history file's."""
    times: list[float] = []
    values: list[float] = []
    for payload in frames:
        frame = decode_frame(payload)
        column = frame.number(attribute)
        stamps = frame.array(frame.times)
        for i, who in enumerate(frame.entity_ids):
            if who == entity:
                times.append(float(stamps[i]))
                values.append(float(column[i]))
    if not times:
        raise SeriesError(f"no events of entity '{entity}' in the events topic")
    stamps_utc = pd.to_datetime(pd.Series(times), unit="s", utc=True)
    local = stamps_utc.dt.tz_convert(timezone or "UTC").dt.tz_localize(None)
    return regular_series(local, pd.Series(values), attribute, freq=freq)
