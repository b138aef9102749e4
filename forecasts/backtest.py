"""Rolling-origin backtests of every candidate model (baselines, statistical models,
Prophet, the mean of the two best) and a model choice that cannot lose to a baseline by
accident.

Origins are spaced ``step`` points apart at the end of the series; each fold trains on the
``train_window`` points before its origin and forecasts ``horizon`` points. The earlier
half of the folds chooses, the later half scores the choice, so it is never graded on the
data that made it. A challenger replaces the best baseline (persistence or a seasonal
naive) only when, on the choosing folds, its MAE is at least ``margin`` lower *and* it
wins at least two thirds of them; otherwise the baseline is kept. On the shipped series
an early edge smaller than that did not survive to the later folds.

Every candidate is reported with MAE, MAPE, MASE (errors scaled by the in-sample MAE of
the seasonal naive at the first seasonality, per fold) and the 80 % interval's coverage,
over all folds and over the later ones.

Example:
    >>> import pandas as pd, numpy as np
    >>> idx = pd.date_range("2024-01-01", periods=24 * 7 * 6, freq="h")
    >>> weekly = pd.Series(np.tile(np.arange(168.0), 6), index=idx)
    >>> result = backtest(weekly, horizon=24, folds=2, seasons=[168],
    ...                   candidates=("naive", "seasonal_naive_168"))
    >>> result["candidates"]["seasonal_naive_168"]["mae"], result["selected"]["model"]
    (0.0, 'seasonal_naive_168')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from citywatch.forecasts.candidates import (
    DEFAULT_CHALLENGERS,
    Factory,
    candidate_factories,
    is_baseline,
)

Progress = Callable[[int, int], None]
"""``(fits done, fits planned)``."""


@dataclass
class Fold:
    """One origin: the actual values after it, the scale of its errors, and each
    candidate's forecast frame (``yhat``, ``yhat_lower``, ``yhat_upper``)."""

    origin: int
    time: pd.Timestamp
    actual: np.ndarray
    scale: float
    forecasts: dict[str, pd.DataFrame] = field(default_factory=dict)


def origins_at_end(length: int, *, horizon: int, folds: int, step: int,
                   min_train: int) -> list[int]:
    """``folds`` origins ``step`` apart, the last ``horizon`` before the end."""
    end = length - horizon
    return [o for o in (end - k * step for k in reversed(range(folds))) if o - min_train > 0]


def make_folds(series: pd.Series, origins: Sequence[int], *, horizon: int,
               train_window: int, season: int) -> list[Fold]:
    """The folds worth scoring (none with a gap to learn from or nothing to score)."""
    folds: list[Fold] = []
    for origin in origins:
        train = series.iloc[max(0, origin - train_window):origin]
        actual = series.iloc[origin:origin + horizon].to_numpy(dtype=float)
        if np.isnan(actual).all() or train.notna().sum() < 2 * season:
            continue
        values = train.to_numpy(dtype=float)
        lagged = np.abs(values[season:] - values[:-season]) if len(values) > season else []
        scale = float(np.nanmean(lagged)) if len(lagged) else math.nan
        folds.append(Fold(origin, series.index[origin], actual, scale))
    return folds


class _Fitter:
    """Fits candidates on folds, counting fits for the progress callback."""

    def __init__(self, series: pd.Series, horizon: int, train_window: int,
                 progress: Progress | None, planned: int) -> None:
        self.series, self.horizon, self.train_window = series, horizon, train_window
        self.progress, self.planned, self.done = progress, planned, 0

    def fit(self, folds: Sequence[Fold], factories: dict[str, Factory]) -> None:
        for fold in folds:
            train = self.series.iloc[max(0, fold.origin - self.train_window):fold.origin]
            for name, make in factories.items():
                if name in fold.forecasts:
                    continue
                fold.forecasts[name] = make().fit(train).predict(self.horizon)
                self.done += 1
                if self.progress is not None:
                    self.progress(self.done, max(self.planned, self.done))


def _errors(fold: Fold, name: str) -> dict[str, np.ndarray]:
    predicted = fold.forecasts[name]
    actual = fold.actual[:len(predicted)]
    yhat = predicted["yhat"].to_numpy(dtype=float)
    known = ~np.isnan(actual) & ~np.isnan(yhat)
    nonzero = known & (actual != 0)
    error = np.abs(actual - yhat)
    inside = ((actual >= predicted["yhat_lower"].to_numpy(dtype=float))
              & (actual <= predicted["yhat_upper"].to_numpy(dtype=float)))
    return {"abs": error[known], "ape": error[nonzero] / np.abs(actual[nonzero]),
            "scaled": error[known] / fold.scale if fold.scale > 0 else np.array([]),
            "inside": inside[known]}


def _mean(parts: list[np.ndarray], scale: float = 1.0) -> float | None:
    values = np.concatenate(parts) if parts else np.array([])
    return round(float(values.mean()) * scale, 3) if len(values) else None


def summary(folds: Sequence[Fold], name: str) -> dict[str, Any]:
    """MAE, MAPE %, MASE and 80 % coverage of ``name`` over ``folds``."""
    parts = [_errors(f, name) for f in folds if name in f.forecasts]
    return {"mae": _mean([p["abs"] for p in parts]),
            "mape": _mean([p["ape"] for p in parts], 100),
            "mase": _mean([p["scaled"] for p in parts]),
            "coverage": _mean([p["inside"].astype(float) for p in parts]),
            "folds": len(parts), "points": int(sum(len(p["abs"]) for p in parts))}


def _fold_mae(fold: Fold, name: str) -> float:
    errors = _errors(fold, name)["abs"]
    return float(errors.mean()) if len(errors) else math.nan


def mean_of_best_two(choosing: Sequence[Fold]) -> tuple[str, str] | None:
    """The two candidates with the lowest MAE on the ``choosing`` folds."""
    ranked = sorted((mae, name) for name in choosing[0].forecasts
                    if (mae := summary(choosing, name)["mae"]) is not None)
    return (ranked[0][1], ranked[1][1]) if len(ranked) >= 2 else None


def add_mean(folds: Sequence[Fold], members: tuple[str, str]) -> str:
    """Add the mean of ``members``' forecasts to every fold that has both."""
    name = f"mean({members[0]}+{members[1]})"
    for fold in folds:
        if all(m in fold.forecasts for m in members):
            fold.forecasts[name] = (fold.forecasts[members[0]]
                                    + fold.forecasts[members[1]]) / 2
    return name


def choose(choosing: Sequence[Fold], names: Sequence[str], margin: float,
           ) -> tuple[str, str]:
    """The model to use and why (see the module docstring)."""
    early = {n: summary(choosing, n)["mae"] for n in names}
    scored = [n for n in names if early[n] is not None]
    baselines = [n for n in scored if is_baseline(n)]
    challengers = [n for n in scored if not is_baseline(n)]
    if not baselines:
        best = min(scored, key=lambda n: early[n])
        return best, f"lowest MAE on the first {len(choosing)} folds ({early[best]})"
    base = min(baselines, key=lambda n: early[n])
    if not challengers:
        return base, f"best baseline on the first {len(choosing)} folds ({early[base]})"
    best = min(challengers, key=lambda n: early[n])
    wins = sum(_fold_mae(f, best) < _fold_mae(f, base) for f in choosing)
    needed = math.ceil(2 * len(choosing) / 3)
    better = early[best] <= (1 - margin) * early[base]
    if better and wins >= needed:
        return best, (f"{best} beat the best baseline {base} on the first {len(choosing)} "
                      f"folds by {1 - early[best] / early[base]:.0%} (MAE {early[best]} vs "
                      f"{early[base]}) and in {wins} of them")
    return base, (f"best baseline on the first {len(choosing)} folds (MAE {early[base]}); "
                  f"the best challenger {best} (MAE {early[best]}, {wins} fold wins) "
                  f"needed a MAE {margin:.0%} lower and {needed} fold wins")


def backtest(series: pd.Series, *, horizon: int = 24, folds: int = 18, step: int = 168,
             train_window: int = 24 * 7 * 8, seasons: Sequence[int] = (24, 168),
             holidays: pd.DataFrame | None = None,
             challengers: Sequence[str] = DEFAULT_CHALLENGERS,
             candidates: Sequence[str] | None = None, margin: float = 0.10,
             prophet: Literal["always", "auto"] = "always", score_all: bool = True,
             progress: Progress | None = None, verbose: bool = False) -> dict[str, Any]:
    """Backtest the candidates on ``series``: metrics of each over all folds and over the
    later folds, the selection and its reason. ``candidates`` narrows the set by name;
    ``prophet="auto"`` fits Prophet only where seasonality is there to model (a seasonal
    naive beats persistence on the choosing folds): elsewhere it cannot win and is the
    slowest candidate by far. ``score_all=False`` (training) fits only the baselines and
    the choice on the later folds: the other challengers' later-fold scores are then
    absent."""
    factories = candidate_factories(seasons, challengers=challengers, holidays=holidays,
                                    verbose=verbose)
    if candidates is not None:
        unknown = [c for c in candidates if c not in factories]
        if unknown:
            raise ValueError(f"unknown candidate(s) {', '.join(unknown)}: "
                             f"choose from {', '.join(factories)}")
        factories = {n: f for n, f in factories.items() if n in candidates}
    season = min(seasons) if seasons else 1
    origins = origins_at_end(len(series), horizon=horizon, folds=folds, step=step,
                             min_train=2 * max(seasons or [1]))
    done = make_folds(series, origins, horizon=horizon, train_window=train_window,
                      season=season)
    result: dict[str, Any] = {"origins": [str(f.time) for f in done], "seasons": list(seasons)}
    if not done:
        result.update(candidates={}, later_folds={})
        return result
    early_count = math.ceil(len(done) / 2) if len(done) >= 2 else len(done)
    choosing, scoring = done[:early_count], done[early_count:]
    fitter = _Fitter(series, horizon, train_window, progress, len(done) * len(factories))
    late_prophet = factories.pop("prophet", None) if prophet == "auto" else None
    fitter.fit(choosing, factories)
    if late_prophet is not None:
        result["prophet"] = _race_prophet(choosing, factories, late_prophet, fitter)
    members = mean_of_best_two(choosing) if len(factories) > 2 else None
    combination = add_mean(choosing, members) if members else None
    chosen, reason = choose(choosing, list(choosing[0].forecasts), margin) if scoring else (
        None, "")
    needed = set(factories) if score_all else {n for n in factories if is_baseline(n)} | (
        set(members or ()) if chosen == combination else {chosen})
    fitter.fit(scoring, {n: f for n, f in factories.items() if n in needed})
    if combination:
        add_mean(scoring, members)  # type: ignore[arg-type]
    names = list(choosing[0].forecasts)
    result["candidates"] = {n: summary(done, n) for n in names}
    result["early_folds_mae"] = {n: summary(choosing, n)["mae"] for n in names}
    result["later_folds"] = {n: summary(scoring, n) for n in names
                             if any(n in f.forecasts for f in scoring)}
    result["baselines"] = [n for n in names if is_baseline(n)]
    result["combination"] = combination
    if chosen is not None:
        later = result["later_folds"]
        baselines = [n for n in result["baselines"] if later[n]["mae"] is not None]
        best_base = min(baselines, key=lambda n: later[n]["mae"]) if baselines else None
        result["selected"] = {
            "model": chosen, "reason": reason, "choosing_folds": len(choosing),
            **later[chosen],
            "best_baseline_later": {"model": best_base,
                                    "mae": later[best_base]["mae"] if best_base else None},
        }
    return result


def _race_prophet(choosing: Sequence[Fold], factories: dict[str, Factory],
                  prophet: Factory, fitter: _Fitter) -> str:
    """Fit Prophet where it can still win: only on a seasonal series, newest choosing
    fold first, stopping once it has lost to the best baseline on more folds than a
    challenger may lose (it could no longer be chosen); adds it to ``factories`` when it
    stays in the running. Returns what was done, for the report."""
    if not _seasonal(choosing, factories):
        return ("not fitted: no seasonal naive beats persistence on the choosing folds, so "
                "there is no seasonality for it to win on")
    baselines = [n for n in factories if is_baseline(n)]
    base = min(baselines, key=lambda n: summary(choosing, n)["mae"] or math.inf)
    allowed = len(choosing) - math.ceil(2 * len(choosing) / 3)
    losses = 0
    for count, fold in enumerate(reversed(choosing), 1):
        fitter.fit([fold], {"prophet": prophet})
        losses += _fold_mae(fold, "prophet") >= _fold_mae(fold, base)
        if losses > allowed:
            for other in choosing:
                other.forecasts.pop("prophet", None)
            return f"dropped after {count} fold(s): it lost to {base} on {losses}"
    factories["prophet"] = prophet
    return "fitted: the series is seasonal"


def _seasonal(choosing: Sequence[Fold], factories: dict[str, Factory]) -> bool:
    """Whether a seasonal naive beats persistence on the choosing folds."""
    if "naive" not in factories:
        return True
    naive = summary(choosing, "naive")["mae"]
    seasonal = [summary(choosing, n)["mae"] for n in factories
                if n.startswith("seasonal_naive_")]
    return naive is not None and any(m is not None and m < naive for m in seasonal)
