"""Forecast rule kinds: scoring events against a precomputed forecast grid (array
lookups only — no model runs per event).

Example:
    >>> import numpy as np
    >>> from citywatch.forecasts.grid import ForecastGrid
    >>> grid = ForecastGrid("s", "s:m", "v1", 0.0, 3600.0, np.array([1.0, 9.0]),
    ...                     np.zeros(2), np.array([2.0, 10.0]))
    >>> grid.first_crossing(np.array([0.0]), "yhat", ">", 5.0, 7200.0).tolist()
    [1]
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from citywatch.forecasts.grid import ForecastGrid
from citywatch.rules.model import Anomaly, ForecastExceedance
from citywatch.rules.stateful import Context, Outcome, iso, run_persistence

_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def score_exceedance(cond: ForecastExceedance, ctx: Context, rows: list[int],
                 grid: ForecastGrid) -> list[Outcome]:
    """Look ahead in the series' forecast grid from each event's time; warn once per
    entity and expected crossing (state: the crossing last warned of)."""
    frame = ctx.frame
    times = frame.times[rows]
    slots = grid.first_crossing(times, cond.bound, cond.op, cond.value, cond.horizon)
    outcomes = []
    likely = _OPS[cond.op](grid.yhat, cond.value)
    warned: dict[str, tuple[bool, Any]] = {}
    for i, t, slot in zip(rows, times.tolist(), slots.tolist(), strict=True):
        if slot < 0:
            continue
        # a crossing already under way is the same episode: warned of once, at its start
        slot = grid.episode_start(slot, cond.bound, cond.op, cond.value)
        expected = grid.time_of(slot)
        entity = frame.entity_ids[i]
        key = f"{ctx.prefix}{entity}"
        if entity not in warned:
            warned[entity] = ctx.state.load(key)
        fresh, last = warned[entity]
        if not fresh or last == [grid.model_version, expected]:
            continue
        warned[entity] = (True, [grid.model_version, expected])
        ctx.state.save(key, [grid.model_version, expected])
        lead = expected - t
        outcomes.append(Outcome(
            time=t, hit=True, group=frame.entity_ids[i], index=i,
            window=f"forecast@{iso(expected)}", id_time=expected,
            model=(grid.model_id, grid.model_version),
            urgency="Immediate" if lead <= 0 else "Expected" if lead <= 3600 else "Future",
            certainty="Likely" if likely[slot] else "Possible",
            values={"expected_at": iso(expected), "lead_minutes": round(lead / 60),
                    "forecast": round(float(grid.yhat[slot]), 2),
                    "forecast_lower": round(float(grid.lower[slot]), 2),
                    "forecast_upper": round(float(grid.upper[slot]), 2),
                    "model_id": grid.model_id, "model_version": grid.model_version}))
    return outcomes

def score_anomaly(cond: Anomaly, ctx: Context, rows: list[int],
              grid: ForecastGrid) -> list[Outcome]:
    """Observed value outside the forecast interval at its time, ``count`` in a row."""
    frame = ctx.frame
    slots = grid.nearest(frame.times)
    known = slots >= 0
    at = np.maximum(slots, 0)
    observed = frame.column(cond.attribute)
    with np.errstate(invalid="ignore"):
        outside = known & ((observed < grid.lower[at]) | (observed > grid.upper[at]))
    if cond.count == 1:
        outcomes = [Outcome(time=float(frame.times[i]), hit=True,
                            group=frame.entity_ids[i], index=i)
                    for i in rows if outside[i]]
    else:
        outcomes = run_persistence(ctx, [i for i in rows if known[i]], outside,
                                   count=cond.count)
    for o in outcomes:
        slot = int(at[o.index])
        o.model = (grid.model_id, grid.model_version)
        o.values.update(expected=round(float(grid.yhat[slot]), 2),
                        expected_lower=round(float(grid.lower[slot]), 2),
                        expected_upper=round(float(grid.upper[slot]), 2),
                        model_id=grid.model_id, model_version=grid.model_version)
    return outcomes
