"""Forecast models with one interface: fit on history, predict ``horizon`` steps with an
80 % interval. ``SeasonalNaive`` repeats the value one season ago (intervals from its own
past errors); ``ProphetModel`` is Prophet with weekday/weekend daily seasonalities,
weekly seasonality and holidays when known.

Example:
    >>> import pandas as pd, numpy as np
    >>> idx = pd.date_range("2024-01-01", periods=24 * 21, freq="h")
    >>> y = pd.Series(np.tile(np.arange(24 * 7), 3), index=idx, dtype=float)
    >>> SeasonalNaive(season=168).fit(y).predict(24)["yhat"].tolist() == list(range(24))
    True
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd


class SeasonalNaive:
    """ŷ(t) = y(t − season) (or two seasons back where that is missing)."""

    name = "seasonal_naive"

    def __init__(self, season: int = 168, interval: float = 0.8) -> None:
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
        step = h.index.freq or pd.tseries.frequencies.to_offset(pd.infer_freq(h.index[-3:]))
        index = pd.date_range(h.index[-1] + step, periods=horizon, freq=step)
        one = h.reindex(index - step * self.season).to_numpy()
        two = h.reindex(index - step * (2 * self.season)).to_numpy()
        yhat = np.where(np.isnan(one), two, one)
        return pd.DataFrame({"yhat": yhat, "yhat_lower": yhat + self.spread[0],
                             "yhat_upper": yhat + self.spread[1]}, index=index)


class ProphetModel:
    """Prophet tuned for city sensor series (hourly traffic, air quality)."""

    name = "prophet"

    def __init__(self, holidays: pd.DataFrame | None = None, interval: float = 0.8,
                 changepoint_prior_scale: float = 0.05) -> None:
        self.holidays = holidays
        self.interval = interval
        self.changepoint_prior_scale = changepoint_prior_scale
        self.model = None

    def fit(self, history: pd.Series) -> ProphetModel:
        from prophet import Prophet

        logging.getLogger("cmdstanpy").setLevel(logging.WARNING)
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
