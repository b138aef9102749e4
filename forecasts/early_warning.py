"""Warning skill: each candidate's forecasts at rolling origins, put through the same grid
lookup the ``forecast_exceedance`` rule uses (``ForecastGrid.first_crossing``), scored as
warnings against what the series then did.

At each origin the rule's view is the newest reading: a warning is raised when the
forecast (``bound``: ``yhat``, or the 80 % interval's ``upper``/``lower``) crosses the
threshold within ``lookahead`` points. An *event* is the series itself crossing it in that
time. Hits, misses and false alarms follow, with precision, recall and the median lead
time of the hits (from the origin's reading to the first real crossing). Persistence
(``naive``) is the warning a duty officer gives without a model: "it is over now".

Every origin is scored (``all``), and separately the *onsets* (``onsets``): origins whose
newest reading is not over the threshold yet. There an early warning is worth the most,
and persistence cannot give one: it is the measure a model has to win.

Example:
    >>> import pandas as pd, numpy as np
    >>> idx = pd.date_range("2024-01-01", periods=24 * 10, freq="h")
    >>> daily_peak = pd.Series(np.tile(np.r_[np.zeros(20), [100.0] * 4], 10), index=idx)
    >>> skill = warning_skill(daily_peak, threshold=75, op=">", lookahead=12, step=24,
    ...                       origins=4, train_window=24 * 5, seasons=[24],
    ...                       candidates=("naive", "seasonal_naive_24"))
    >>> skill["models"]["seasonal_naive_24"]["hits"], skill["models"]["naive"]["misses"]
    (4, 4)
    >>> skill["onsets"]["seasonal_naive_24"]["median_lead_hours"]
    9.0
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from citywatch.forecasts.backtest import Progress, origins_at_end
from citywatch.forecasts.candidates import DEFAULT_CHALLENGERS, candidate_factories
from citywatch.forecasts.grid import ForecastGrid

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def _epoch(stamp: pd.Timestamp) -> float:
    return (pd.Timestamp(stamp).tz_localize(None) - pd.Timestamp(0)).total_seconds()


def warning_skill(series: pd.Series, *, threshold: float, op: str = ">",
                  lookahead: int = 24, step: int = 24, origins: int = 60,
                  train_window: int = 24 * 7 * 8, seasons: Sequence[int] = (24, 168),
                  bound: str = "yhat", candidates: Sequence[str] | None = None,
                  challengers: Sequence[str] = DEFAULT_CHALLENGERS,
                  holidays: pd.DataFrame | None = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Hits, misses, false alarms, precision, recall and median lead time per candidate
    over ``origins`` origins ``step`` points apart at the end of ``series``."""
    if op not in _OPS:
        raise ValueError(f"op {op!r}: one of {', '.join(_OPS)}")
    factories = candidate_factories(seasons, challengers=challengers, holidays=holidays)
    if candidates is not None:
        factories = {n: f for n, f in factories.items() if n in candidates}
    compare = _OPS[op]
    points = origins_at_end(len(series), horizon=lookahead, folds=origins, step=step,
                            min_train=2 * max(seasons or [1]))
    seconds = (series.index[1] - series.index[0]).total_seconds()
    tallies: dict[str, dict[str, dict[str, Any]]] = {
        part: {name: {"hits": 0, "misses": 0, "false_alarms": 0, "quiet": 0, "leads": []}
               for name in factories} for part in ("models", "onsets")}
    scored = events = onsets = 0
    planned, done = len(points) * len(factories), 0
    for origin in points:
        train = series.iloc[max(0, origin - train_window):origin]
        after = series.iloc[origin:origin + lookahead]
        if train.notna().sum() < 2 * max(seasons or [1]) or after.isna().all():
            continue
        scored += 1
        now = _epoch(series.index[origin - 1])
        crossed = after[compare(after.to_numpy(dtype=float), threshold)]
        event = len(crossed) > 0
        events += event
        known = train.dropna()
        onset = not compare(float(known.iloc[-1]), threshold)
        onsets += onset
        for name, make in factories.items():
            frame = make().fit(train).predict(lookahead)
            grid = ForecastGrid.from_frame(name, name, "backtest", frame)
            slot = int(grid.first_crossing(np.array([now]), bound, op, threshold,
                                           lookahead * seconds)[0])
            for part in ("models", "onsets") if onset else ("models",):
                counts = tallies[part][name]
                if slot >= 0 and event:
                    counts["hits"] += 1
                    counts["leads"].append((_epoch(crossed.index[0]) - now) / 3600)
                elif slot >= 0:
                    counts["false_alarms"] += 1
                elif event:
                    counts["misses"] += 1
                else:
                    counts["quiet"] += 1
            done += 1
            if progress is not None:
                progress(done, planned)
    return {"threshold": threshold, "op": op, "bound": bound, "lookahead": lookahead,
            "origins": scored, "events": events, "onset_origins": onsets,
            "first_origin": str(series.index[points[0]]) if points else None,
            "last_origin": str(series.index[points[-1]]) if points else None,
            "models": _scores(tallies["models"]), "onsets": _scores(tallies["onsets"])}


def _scores(tally: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, counts in tally.items():
        hits, misses, false = counts["hits"], counts["misses"], counts["false_alarms"]
        leads = counts["leads"]
        out[name] = {
            "hits": hits, "misses": misses, "false_alarms": false, "quiet": counts["quiet"],
            "precision": round(hits / (hits + false), 3) if hits + false else None,
            "recall": round(hits / (hits + misses), 3) if hits + misses else None,
            "median_lead_hours": round(float(np.median(leads)), 2) if leads else None}
    return out
