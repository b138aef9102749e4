"""The candidate models a series is scored with, and the seasonalities of its frequency.

Baselines are what a duty officer would guess without a model: persistence (``naive``)
and the seasonal naive at each seasonality of the series (24 and 168 points for hourly
data, 7 for daily). Challengers are statsforecast's ETS, Theta and MSTL, and Prophet;
ARIMA is available by name (it is slow at these lengths).

Example:
    >>> seasonalities("h", 1344), seasonalities("H", 100), seasonalities("D", 140)
    ([24, 168], [24], [7])
    >>> sorted(candidate_factories([24, 168]))
    ['ets', 'mstl', 'naive', 'prophet', 'seasonal_naive_168', 'seasonal_naive_24', 'theta']
    >>> is_baseline("seasonal_naive_24"), is_baseline("mstl")
    (True, False)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from citywatch.forecasts.models import (
    STATS_METHODS,
    MeanModel,
    Persistence,
    ProphetModel,
    SeasonalNaive,
    StatsModel,
)

Factory = Callable[[], Any]
DEFAULT_CHALLENGERS = ("ets", "theta", "mstl", "prophet")
TRAINING_CHALLENGERS = ("ets", "theta", "prophet")


class FrequencyError(ValueError):
    """A ``--freq`` that is not a pandas frequency alias."""


def normal_freq(text: str) -> str:
    """The pandas alias for ``text``, accepting the usual spellings in either case
    (``H`` and ``h``, ``D`` and ``d``, ``5T`` and ``5min``)."""
    for candidate in (text, text.lower(), text.upper()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return pd.tseries.frequencies.to_offset(candidate).freqstr
        except ValueError:
            continue
    raise FrequencyError(f"freq: {text!r} is not a pandas frequency alias "
                         "(h, D, 15min, W, MS, ...)")


def seasonalities(freq: str, length: int) -> list[int]:
    """Points per day and per week of ``freq`` (12 for monthly data), each kept when it is
    at least 2 and ``length`` points hold two cycles of it."""
    offset = pd.tseries.frequencies.to_offset(normal_freq(freq))
    try:
        step = pd.Timedelta(offset).total_seconds()
    except ValueError:  # calendar frequencies (months, quarters)
        found = [12] if offset.name.startswith("M") else [4] if offset.name.startswith(
            "Q") else []
    else:
        found = [round(days * 86400 / step) for days in (1, 7)
                 if (days * 86400) % step == 0]
    return sorted({s for s in found if s >= 2 and 2 * s <= length})


def is_baseline(name: str) -> bool:
    return name == "naive" or name.startswith("seasonal_naive_")


def candidate_factories(seasons: Sequence[int], *,
                        challengers: Sequence[str] = DEFAULT_CHALLENGERS,
                        holidays: pd.DataFrame | None = None,
                        verbose: bool = False) -> dict[str, Factory]:
    """Name → a fresh unfitted model, baselines first."""
    out: dict[str, Factory] = {"naive": Persistence}
    for season in seasons:
        out[f"seasonal_naive_{season}"] = lambda season=season: SeasonalNaive(season=season)
    for name in challengers:
        if name == "prophet":
            out[name] = lambda: ProphetModel(holidays, verbose=verbose)
        elif name in STATS_METHODS:
            out[name] = lambda name=name: StatsModel(name, seasons)
        else:
            raise ValueError(f"unknown candidate {name!r}: one of "
                             f"{', '.join(('prophet', *STATS_METHODS))}")
    return out


def model_named(name: str, factories: dict[str, Factory]) -> Any:
    """A fresh model for a candidate name, ``mean(a+b)`` included."""
    if name.startswith("mean(") and name.endswith(")"):
        return MeanModel([factories[part]() for part in name[5:-1].split("+")])
    return factories[name]()
