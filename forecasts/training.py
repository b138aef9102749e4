"""Training: per series, backtest the candidates (``citywatch.forecasts.backtest``: the
baselines, statistical models, Prophet where the series is seasonal), fit the choice on
the latest window, and return it with the whole table, ready for the registry. Many
series train in parallel worker processes.

Example:
    >>> spec = SeriesSpec(key="i94:traffic_volume", csv="Metro_Interstate_Traffic_Volume.csv",
    ...                   time=["date_time"], value="traffic_volume")  # doctest: +SKIP
    >>> trained = train_series(spec)                                   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from citywatch.forecasts.backtest import backtest
from citywatch.forecasts.candidates import (
    TRAINING_CHALLENGERS,
    candidate_factories,
    model_named,
    normal_freq,
    seasonalities,
)
from citywatch.forecasts.grid import ForecastGrid
from citywatch.forecasts.models import holidays_from_column
from citywatch.forecasts.series import SeriesReport, load_series, series_from_events

TopicReader = Callable[[str, str], Iterable[bytes]]
"""``(bootstrap, topic) -> message values`` of every partition, start to end."""


class EventsHistory(BaseModel):
    """History read back from the ``events`` topic: one entity's events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap: str
    topic: str
    entity: str


class SeriesSpec(BaseModel):
    """One series to train: where its history is (a CSV file, or the events topic) and
    how to read it; ``value`` is the column, or the attribute of the events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1, max_length=200)
    csv: str | None = None
    events: EventsHistory | None = None
    time: list[str] = Field(default=["time"], min_length=1)
    value: str
    freq: str = "h"
    holiday_column: str | None = None
    horizon: int = Field(default=24, ge=1)
    train_window: int = Field(default=24 * 7 * 8, ge=2)
    seasons: list[int] | None = None
    """Seasonal periods in points; default: a day and a week of ``freq`` that fit the
    training window (24 and 168 for hourly data, 7 for daily)."""
    challengers: list[str] = Field(default=list(TRAINING_CHALLENGERS))
    """Models scored against the baselines (``ets``, ``theta``, ``mstl``, ``arima``,
    ``prophet``); Prophet is fitted only where the series is seasonal. MSTL is left out
    by default to keep training fast (``forecasts evaluate`` scores it)."""
    folds: int = Field(default=6, ge=2)
    until: datetime | None = None
    """Train on history up to this time only (backtests, early-warning replays)."""
    timezone: str | None = None
    """Time zone of wall-clock times in the file (grid times are UTC)."""
    grid_steps: int = Field(default=24 * 7, ge=1)
    """Steps ahead of the history end that the forecast grid covers."""

    @model_validator(mode="after")
    def _one_source(self) -> SeriesSpec:
        if (self.csv is None) == (self.events is None):
            raise ValueError("give exactly one of csv or events")
        return self

    @field_validator("freq")
    @classmethod
    def _pandas_alias(cls, value: str) -> str:
        return normal_freq(value)

    @property
    def season_list(self) -> list[int]:
        return (self.seasons if self.seasons is not None
                else seasonalities(self.freq, self.train_window))

    def history(self, read_topic: TopicReader | None = None,
                ) -> tuple[pd.Series, SeriesReport]:
        """The series; ``read_topic(bootstrap, topic)`` yields the events topic's frames
        when the history is in Kafka (the stream layer's
        ``citywatch.streams.kafka_admin.read_topic``)."""
        if self.events is not None:
            if read_topic is None:
                raise ValueError(f"series {self.key}: history in Kafka needs a topic reader")
            frames = read_topic(self.events.bootstrap, self.events.topic)
            return series_from_events(frames,
                                      entity=self.events.entity, attribute=self.value,
                                      freq=self.freq, timezone=self.timezone)
        assert self.csv is not None
        return load_series(self.csv, self.time, self.value, freq=self.freq)


@dataclass
class TrainedModel:
    series_key: str
    kind: str
    version: str
    train_start: Any
    train_end: Any
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    serialized: str
    grid: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return f"{self.series_key}:{self.kind}"


def train_series(spec: SeriesSpec, read_topic: TopicReader | None = None) -> TrainedModel:
    """Backtest, choose, and fit the chosen model on the latest ``train_window`` points."""
    series, report = spec.history(read_topic)
    if spec.until is not None:
        series = series[series.index <= pd.Timestamp(spec.until.replace(tzinfo=None))]
    holidays = (holidays_from_column(spec.csv, spec.time[0], spec.holiday_column)
                if spec.holiday_column and spec.csv else None)
    return train_on(spec, series, report, holidays)


def train_on(spec: SeriesSpec, series: pd.Series, report: SeriesReport,
             holidays: pd.DataFrame | None = None) -> TrainedModel:
    """:func:`train_series` on a series already read."""
    seasons = spec.season_list
    result = backtest(series, horizon=spec.horizon, folds=spec.folds,
                      step=max(seasons or [spec.horizon]), train_window=spec.train_window,
                      seasons=seasons, holidays=holidays, challengers=spec.challengers,
                      prophet="auto", score_all=False)
    chosen = result.get("selected", {}).get("model") or (
        f"seasonal_naive_{max(seasons)}" if seasons else "naive")
    window = series.iloc[-spec.train_window:]
    factories = candidate_factories(seasons, challengers=spec.challengers, holidays=holidays)
    model = model_named(chosen, factories).fit(window)
    serialized = model.to_json()
    parameters = spec.model_dump(mode="json")
    version = hashlib.sha256(f"{chosen}|{parameters}|{window.index[-1]}|{serialized}"
                             .encode()).hexdigest()[:12]
    metrics = {"backtest": result, "series": report.as_dict()}
    grid = ForecastGrid.from_frame(spec.key, f"{spec.key}:{chosen}", version,
                                   model.predict(spec.grid_steps), spec.timezone)
    return TrainedModel(spec.key, chosen, version, window.index[0].to_pydatetime(),
                        window.index[-1].to_pydatetime(), parameters, metrics, serialized,
                        grid.to_dict())


def train_many(specs: Iterable[SeriesSpec], *, workers: int = 2,
               progress: Callable[[TrainedModel], None] | None = None,
               read_topic: TopicReader | None = None) -> list[TrainedModel]:
    """Train every series in ``workers`` processes; ``progress`` hears of each one;
    ``read_topic`` (a picklable function) reads series kept in Kafka."""
    specs = list(specs)
    trained: list[TrainedModel] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for future in as_completed([pool.submit(train_series, s, read_topic) for s in specs]):
            model = future.result()
            trained.append(model)
            if progress is not None:
                progress(model)
    return trained
