"""Rolling-origin backtests of Prophet against a seasonal-naive forecast, and the model
choice that follows from them.

Origins are spaced ``step`` points apart at the end of the series; each fold trains on the
``train_window`` points before its origin and forecasts ``horizon`` points. The earlier
half of the folds picks the model (lower MAE); the ``selected`` block scores that choice
on the later half only, so the choice is never graded on the data that made it.

Example:
    >>> import pandas as pd, numpy as np
    >>> idx = pd.date_range("2024-01-01", periods=24 * 7 * 6, freq="h")
    >>> weekly = pd.Series(np.tile(np.arange(168.0), 6), index=idx)
    >>> result = backtest(weekly, horizon=24, folds=2, models=("seasonal_naive",))
    >>> result["seasonal_naive"]["mae"]
    0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from citywatch.forecasts.models import ProphetModel, SeasonalNaive


def _score(actual: np.ndarray, predicted: pd.DataFrame) -> dict[str, np.ndarray]:
    yhat = predicted["yhat"].to_numpy()
    known = ~np.isnan(actual) & ~np.isnan(yhat)
    nonzero = known & (actual != 0)
    inside = ((actual >= predicted["yhat_lower"].to_numpy())
              & (actual <= predicted["yhat_upper"].to_numpy()))[known]
    return {"abs": np.abs(actual - yhat)[known],
            "ape": (np.abs(actual - yhat)[nonzero] / np.abs(actual[nonzero])),
            "inside": inside}


def _summary(scores: list[dict[str, np.ndarray]], *, coverage: bool) -> dict[str, Any]:
    errors = np.concatenate([s["abs"] for s in scores]) if scores else np.array([])
    apes = np.concatenate([s["ape"] for s in scores]) if scores else np.array([])
    out: dict[str, Any] = {"mae": round(float(errors.mean()), 3) if len(errors) else None,
                           "mape": round(float(apes.mean() * 100), 3) if len(apes) else None,
                           "folds": len(scores), "points": int(len(errors))}
    if coverage:
        inside = np.concatenate([s["inside"] for s in scores]) if scores else np.array([])
        out["coverage"] = round(float(inside.mean()), 3) if len(inside) else None
    return out


def backtest(series: pd.Series, *, horizon: int = 24, folds: int = 18, step: int = 168,
             train_window: int = 24 * 7 * 8, season: int = 168,
             holidays: pd.DataFrame | None = None,
             models: Sequence[str] = ("prophet", "seasonal_naive")) -> dict[str, Any]:
    """Backtest ``models`` on ``series``; returns per-model metrics and the selection."""
    end = len(series) - horizon
    origins = [end - k * step for k in reversed(range(folds))]
    origins = [o for o in origins if o - 2 * season > 0]
    scores: dict[str, list[dict[str, np.ndarray]]] = {m: [] for m in models}
    used: list[int] = []
    for origin in origins:
        train = series.iloc[max(0, origin - train_window):origin]
        actual = series.iloc[origin:origin + horizon].to_numpy()
        if np.isnan(actual).all() or train.notna().sum() < 2 * season:
            continue  # a gap: nothing to learn from or to score against
        used.append(origin)
        for name in models:
            model = (ProphetModel(holidays) if name == "prophet"
                     else SeasonalNaive(season=season))
            scores[name].append(_score(actual, model.fit(train).predict(horizon)))
    result: dict[str, Any] = {
        name: _summary(scores[name], coverage=name == "prophet") for name in models}
    result["origins"] = [str(series.index[o]) for o in used]
    if len(used) >= 2 and len(models) > 1:
        early = math.ceil(len(used) / 2)
        first = {m: _summary(scores[m][:early], coverage=False)["mae"] for m in models}
        winner = min(models, key=lambda m: (first[m] is None, first[m] or 0.0))
        later = {m: _summary(scores[m][early:], coverage=m == "prophet") for m in models}
        result["selected"] = {
            "model": winner,
            "reason": (f"lower MAE on the first {early} folds: "
                       + ", ".join(f"{m} {first[m]}" for m in models)),
            **later[winner],
            "later_folds_mae": {m: later[m]["mae"] for m in models},
        }
    return result
