"""Forecast models with one interface: fit on history, predict ``horizon`` steps with an
80 % interval, and ``to_json``/``from_json`` for the registry.

- ``Persistence`` holds the last value (the duty officer's guess; intervals from the
  history's own k-step changes);
- ``SeasonalNaive`` repeats the value one season ago (intervals from its own past errors);
- ``StatsModel`` is one of statsforecast's ETS, Theta, MSTL or ARIMA (their own
  intervals);
- ``ProphetModel`` is Prophet with weekday/weekend daily seasonalities, weekly
  seasonality and holidays when known;
- ``MeanModel`` is the mean of other models' forecasts and bounds.

Example:
    >>> import pandas as pd, numpy as np
    >>> idx = pd.date_range("2024-01-01", periods=24 * 21, freq="h")
    >>> y = pd.Series(np.tile(np.arange(24 * 7), 3), index=idx, dtype=float)
    >>> SeasonalNaive(season=168).fit(y).predict(24)["yhat"].tolist() == list(range(24))
    True
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd


class Forecaster(Protocol):
    """What every model offers."""

    name: str

    def fit(self, history: pd.Series) -> Forecaster: ...

    def predict(self, horizon: int) -> pd.DataFrame: ...

    def to_json(self) -> str: ...


def _step(index: pd.DatetimeIndex) -> Any:
    return index.freq or pd.tseries.frequencies.to_offset(pd.infer_freq(index[-3:]))


def _future(history: pd.Series, horizon: int) -> pd.DatetimeIndex:
    step = _step(history.index)
    return pd.date_range(history.index[-1] + step, periods=horizon, freq=step)


def _series_dict(series: pd.Series) -> dict[str, Any]:
    return {"freq": series.index.freqstr, "index": [t.isoformat() for t in series.index],
            "values": [None if np.isnan(v) else float(v) for v in series]}


def _series_from(data: dict[str, Any]) -> pd.Series:
    index = pd.DatetimeIndex(pd.to_datetime(data["index"]), freq=data["freq"])
    return pd.Series([np.nan if v is None else v for v in data["values"]], index=index,
                     dtype=float)


def _filled(history: pd.Series) -> np.ndarray:
    """The values with gaps interpolated (statistical models take no NaN)."""
    return history.interpolate(limit_direction="both").to_numpy(dtype=float)


class Persistence:
    """ŷ(t + k) = the last known value; the 80 % interval from the history's own
    k-step changes (empirical quantiles), so it widens with the lead time.

    Example:
        >>> idx = pd.date_range("2024-01-01", periods=6, freq="h")
        >>> Persistence().fit(pd.Series([1.0, 2, 3, 4, 5, 6], index=idx)).predict(2)[
        ...     "yhat"].tolist()
        [6.0, 6.0]
    """

    name = "naive"

    def __init__(self, interval: float = 0.8) -> None:
        self.interval = interval
        self.history: pd.Series | None = None

    def fit(self, history: pd.Series) -> Persistence:
        self.history = history
        return self

    def predict(self, horizon: int) -> pd.DataFrame:
        assert self.history is not None
        h = self.history
        known = h.dropna()
        last = float(known.iloc[-1]) if len(known) else np.nan
        tail = (1 - self.interval) / 2
        values = h.to_numpy(dtype=float)
        lower, upper = np.zeros(horizon), np.zeros(horizon)
        for k in range(1, horizon + 1):
            changes = values[k:] - values[:-k] if k < len(values) else np.array([])
            changes = changes[~np.isnan(changes)]
            if len(changes):
                lower[k - 1], upper[k - 1] = np.quantile(changes, [tail, 1 - tail])
        yhat = np.full(horizon, last)
        return pd.DataFrame({"yhat": yhat, "yhat_lower": yhat + lower,
                             "yhat_upper": yhat + upper}, index=_future(h, horizon))

    def to_json(self) -> str:
        assert self.history is not None
        return json.dumps({"interval": self.interval, **_series_dict(self.history)})

    @classmethod
    def from_json(cls, text: str) -> Persistence:
        data = json.loads(text)
        return cls(interval=data["interval"]).fit(_series_from(data))


STATS_METHODS = ("ets", "theta", "mstl", "arima")


class StatsModel:
    """A statsforecast model: ``ets`` (additive damped-trend ETS, AutoETS's AAdN: the
    search over every non-seasonal ETS costs 3× more and seasonal ETS is slow at hourly
    seasons), ``theta`` (the dynamic optimised Theta method, deseasonalised at the
    first season; AutoTheta's search over four Theta variants costs 5× more), ``mstl``
    (MSTL over every season with an ETS trend) or ``arima`` (AutoARIMA, non-seasonal;
    slow). Gaps are interpolated for fitting; intervals are the model's own.

    Example:
        >>> idx = pd.date_range("2024-01-01", periods=24 * 14, freq="h")
        >>> daily = pd.Series(np.tile(np.arange(24.0), 14), index=idx)
        >>> model = StatsModel("mstl", seasons=[24]).fit(daily)
        >>> model.name, [round(v) for v in model.predict(3)["yhat"]]
        ('mstl', [0, 1, 2])
    """

    def __init__(self, method: str, seasons: Sequence[int] = (), interval: float = 0.8,
                 ) -> None:
        if method not in STATS_METHODS:
            raise ValueError(f"method {method!r}: one of {', '.join(STATS_METHODS)}")
        self.name = method
        self.method = method
        self.seasons = [int(s) for s in seasons]
        self.interval = interval
        self.history: pd.Series | None = None
        self.model: Any = None

    def _make(self) -> Any:
        from statsforecast.models import MSTL, AutoARIMA, AutoETS, DynamicOptimizedTheta

        if self.method == "ets":
            return AutoETS(season_length=1, model="AAN", damped=True)
        if self.method == "arima":
            return AutoARIMA(season_length=1)
        if self.method == "theta":
            return DynamicOptimizedTheta(season_length=self.seasons[0] if self.seasons else 1)
        return MSTL(season_length=self.seasons or [1], trend_forecaster=AutoETS(model="ZZN"))

    def fit(self, history: pd.Series) -> StatsModel:
        self.history = history
        self.model = self._make().fit(_filled(history))
        return self

    def predict(self, horizon: int) -> pd.DataFrame:
        assert self.history is not None and self.model is not None
        level = round(self.interval * 100)
        out = self.model.predict(horizon, level=[level])
        return pd.DataFrame({"yhat": out["mean"], "yhat_lower": out[f"lo-{level}"],
                             "yhat_upper": out[f"hi-{level}"]},
                            index=_future(self.history, horizon))

    def to_json(self) -> str:
        """The method, seasons and training window (refitted on load: deterministic)."""
        assert self.history is not None
        return json.dumps({"method": self.method, "seasons": self.seasons,
                           "interval": self.interval, **_series_dict(self.history)})

    @classmethod
    def from_json(cls, text: str) -> StatsModel:
        data = json.loads(text)
        return cls(data["method"], data["seasons"], data["interval"]).fit(_series_from(data))


class MeanModel:
    """The mean of other models' forecasts (and of their bounds).

    Example:
        >>> idx = pd.date_range("2024-01-01", periods=48, freq="h")
        >>> y = pd.Series(np.arange(48.0), index=idx)
        >>> both = MeanModel([Persistence(), SeasonalNaive(season=24)]).fit(y)
        >>> both.name, both.predict(1)["yhat"].tolist()
        ('mean(naive+seasonal_naive_24)', [35.5])
    """

    def __init__(self, members: Sequence[Any]) -> None:
        self.members = list(members)
        self.name = f"mean({'+'.join(m.name for m in self.members)})"

    def fit(self, history: pd.Series) -> MeanModel:
        for member in self.members:
            member.fit(history)
        return self

    def predict(self, horizon: int) -> pd.DataFrame:
        frames = [m.predict(horizon) for m in self.members]
        return sum(frames[1:], frames[0]) / len(frames)

    def to_json(self) -> str:
        return json.dumps({"members": [[m.name, m.to_json()] for m in self.members]})

    @classmethod
    def from_json(cls, text: str) -> MeanModel:
        return cls([load_model(kind, body) for kind, body in json.loads(text)["members"]])


class SeasonalNaive:
    """ŷ(t) = y(t − season) (or two seasons back where that is missing)."""

    def __init__(self, season: int = 168, interval: float = 0.8) -> None:
        self.name = f"seasonal_naive_{season}"
        self.season = season
        self.interval = interval
        self.history: pd.Series | None = None
        self.spread: tuple[float, float] = (0.0, 0.0)

    def fit(self, history: pd.Series) -> SeasonalNaive:
        self.history = history
        errors = (history - history.shift(self.season)).dropna()
        if len(errors):
            tail = (1 - self.interval) / 2
            self.spread = (float(errors.quantile(tail)), float(errors.quantile(1 - tail)))
        return self

    def to_json(self) -> str:
        """The state needed to predict again: the last two seasons and the spread."""
        assert self.history is not None
        tail = self.history.iloc[-2 * self.season:]
        return json.dumps({"season": self.season, "interval": self.interval,
                           "spread": list(self.spread), "freq": tail.index.freqstr,
                           "index": [t.isoformat() for t in tail.index],
                           "values": [None if np.isnan(v) else float(v) for v in tail]})

    @classmethod
    def from_json(cls, text: str) -> SeasonalNaive:
        data = json.loads(text)
        model = cls(season=data["season"], interval=data["interval"])
        index = pd.DatetimeIndex(pd.to_datetime(data["index"]), freq=data["freq"])
        model.history = pd.Series([np.nan if v is None else v for v in data["values"]],
                                  index=index, dtype=float)
        model.spread = (data["spread"][0], data["spread"][1])
        return model

    def predict(self, horizon: int) -> pd.DataFrame:
        assert self.history is not None
        h = self.history
        step = _step(h.index)
        index = _future(h, horizon)
        one = h.reindex(index - step * self.season).to_numpy()
        two = h.reindex(index - step * (2 * self.season)).to_numpy()
        yhat = np.where(np.isnan(one), two, one)
        return pd.DataFrame({"yhat": yhat, "yhat_lower": yhat + self.spread[0],
                             "yhat_upper": yhat + self.spread[1]}, index=index)


def quiet_prophet(verbose: bool = False) -> None:
    """Keep Prophet's and cmdstanpy's chatter (optimiser progress, the missing-plotly
    notice) off the console unless ``verbose``."""
    with contextlib.suppress(ImportError):  # it sets its own level on first use
        from cmdstanpy.utils import get_logger

        get_logger()
    level = logging.DEBUG if verbose else logging.CRITICAL
    for name in ("cmdstanpy", "prophet", "prophet.plot"):
        logging.getLogger(name).setLevel(level)


class ProphetModel:
    """Prophet tuned for city sensor series (hourly traffic, air quality)."""

    name = "prophet"

    def __init__(self, holidays: pd.DataFrame | None = None, interval: float = 0.8,
                 changepoint_prior_scale: float = 0.05, verbose: bool = False) -> None:
        self.verbose = verbose
        self.holidays = holidays
        self.interval = interval
        self.changepoint_prior_scale = changepoint_prior_scale
        self.model = None

    def fit(self, history: pd.Series) -> ProphetModel:
        quiet_prophet(self.verbose)
        from prophet import Prophet

        frame = pd.DataFrame({"ds": history.index, "y": history.to_numpy()}).dropna()
        frame["weekend"] = frame["ds"].dt.day_of_week >= 5
        frame["weekday"] = ~frame["weekend"]
        model = Prophet(interval_width=self.interval, daily_seasonality=False,
                        weekly_seasonality=True, yearly_seasonality=False,
                        changepoint_prior_scale=self.changepoint_prior_scale,
                        holidays=self.holidays)
        model.add_seasonality("daily_weekday", period=1, fourier_order=8,
                              condition_name="weekday")
        model.add_seasonality("daily_weekend", period=1, fourier_order=8,
                              condition_name="weekend")
        self.model = model.fit(frame)
        self._last = history.index[-1]
        self._step = pd.Timedelta(history.index.freq or pd.Timedelta(hours=1))
        return self

    def to_json(self) -> str:
        """Prophet's own JSON serialisation, plus where the history ended."""
        from prophet.serialize import model_to_json

        assert self.model is not None
        return json.dumps({"prophet": model_to_json(self.model),
                           "last": self._last.isoformat(), "step": str(self._step)})

    @classmethod
    def from_json(cls, text: str) -> ProphetModel:
        from prophet.serialize import model_from_json

        data = json.loads(text)
        model = cls()
        model.model = model_from_json(data["prophet"])
        model._last = pd.Timestamp(data["last"])
        model._step = pd.Timedelta(data["step"])
        return model

    def predict(self, horizon: int) -> pd.DataFrame:
        assert self.model is not None
        index = pd.date_range(self._last + self._step, periods=horizon, freq=self._step)
        future = pd.DataFrame({"ds": index})
        future["weekend"] = future["ds"].dt.day_of_week >= 5
        future["weekday"] = ~future["weekend"]
        # Prophet samples its intervals with NumPy's global RNG: seed it for this call so
        # the same model always gives the same grid (then restore the caller's state)
        state = np.random.get_state()
        np.random.seed(0)
        try:
            out = self.model.predict(future)
        finally:
            np.random.set_state(state)
        return pd.DataFrame({"yhat": out["yhat"].to_numpy(),
                             "yhat_lower": out["yhat_lower"].to_numpy(),
                             "yhat_upper": out["yhat_upper"].to_numpy()}, index=index)


def holidays_from_column(source: str, time_column: str, holiday_column: str,
                         none_value: str = "None") -> pd.DataFrame | None:
    """Prophet holidays from a column naming the holiday (I-94: on the day's first hour)."""
    frame = pd.read_csv(source, usecols=[time_column, holiday_column])
    named = frame[frame[holiday_column].notna() & (frame[holiday_column] != none_value)]
    if named.empty:
        return None
    days = pd.to_datetime(named[time_column]).dt.normalize()
    return pd.DataFrame({"holiday": named[holiday_column].to_numpy(), "ds": days.to_numpy(),
                         "lower_window": 0, "upper_window": 1}).drop_duplicates()


def load_model(kind: str, serialized: str) -> Any:
    """A registry row's model from its kind (``naive``, ``seasonal_naive[_N]``,
    ``prophet``, a statsforecast method, ``mean(...)``) and its JSON."""
    if kind == "naive":
        return Persistence.from_json(serialized)
    if kind.startswith("seasonal_naive"):
        return SeasonalNaive.from_json(serialized)
    if kind == "prophet":
        return ProphetModel.from_json(serialized)
    if kind in STATS_METHODS:
        return StatsModel.from_json(serialized)
    if kind.startswith("mean("):
        return MeanModel.from_json(serialized)
    raise ValueError(f"unknown model kind {kind!r}")
