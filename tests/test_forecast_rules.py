"""Forecast rule kinds on real I-94 data: an early warning before the observed crossing,
anomalies against the prediction interval, and a retrained model swapped in live."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from citywatch.connectors.file import FileSource, load_feed
from citywatch.forecasts.grid import ForecastBook, ForecastGrid
from citywatch.forecasts.training import SeriesSpec, TrainedModel, train_series
from citywatch.ops.settings import DEMO_DIR
from citywatch.ops.store.forecast_models import ModelRegistry
from citywatch.ops.store.store import IncidentStore
from citywatch.rules.engine import RuleEngine
from citywatch.rules.model import RuleSet
from citywatch.streams.envelope import Envelope

CUTOFF = datetime(2018, 9, 17, 0, 0)  # a Monday, Minneapolis time; no holiday in 2 weeks
ALERT = {"severity": "Moderate", "category": "Transport",
         "message": "{forecast} veh/h expected at {expected_at}"}


def spec(shared_data: Path, until: datetime) -> SeriesSpec:
    return SeriesSpec(key="i94:volume",
                      csv=str(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv"),
                      time=["date_time"], value="traffic_volume", holiday_column="holiday",
                      until=until, timezone="America/Chicago", folds=4, grid_steps=48)


@pytest.fixture(scope="module")
def trained(shared_data: Path) -> TrainedModel:
    return train_series(spec(shared_data, CUTOFF))


@pytest.fixture(scope="module")
def i94_after_cutoff(shared_data: Path) -> list[Envelope]:
    feed = load_feed(DEMO_DIR / "feeds/i94_traffic.yaml")
    start = pd.Timestamp(CUTOFF, tz="America/Chicago")
    events = [e for e in FileSource(feed).run() if isinstance(e, Envelope)]
    return [e for e in events if start < e.time <= start + pd.Timedelta(hours=47)]


def engine_with(rule: dict, book: ForecastBook) -> RuleEngine:
    return RuleEngine.from_ruleset(RuleSet.model_validate({"rules": [rule]}),
                                   forecasts=book)


def registry_book(tmp_path: Path, *models: TrainedModel) -> tuple[ModelRegistry, ForecastBook]:
    store = IncidentStore(f"sqlite:///{tmp_path / 'models.db'}")
    store.create_schema()
    registry = ModelRegistry(store)
    for model in models:
        registry.save(model)
    book = ForecastBook()
    book.refresh(registry.newest_grids())
    return registry, book


def test_early_warning_before_the_observed_crossing(
        trained: TrainedModel, i94_after_cutoff: list[Envelope], shared_data: Path,
        tmp_path: Path) -> None:
    _, book = registry_book(tmp_path, trained)
    engine = engine_with({"id": "i94-congestion-ahead", "domain": "traffic",
                          "condition": {"type": "forecast_exceedance",
                                        "series": "i94:volume", "op": ">", "value": 6000,
                                        "horizon": "6h", "bound": "yhat"},
                          "alert": ALERT}, book)
    alerts = [a for hour in range(0, len(i94_after_cutoff), 6)
              for a in engine.evaluate(i94_after_cutoff[hour:hour + 6])]

    raw = pd.read_csv(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv")
    raw["t"] = pd.to_datetime(raw["date_time"]).dt.tz_localize(
        "America/Chicago", ambiguous="NaT", nonexistent="NaT")
    after = raw[raw["t"] > pd.Timestamp(CUTOFF, tz="America/Chicago")]
    crossed = after.loc[after["traffic_volume"] > 6000, "t"].min()
    assert alerts, "no early warning"
    first = min(alerts, key=lambda a: a.event_time)
    assert first.event_time < crossed.tz_convert("UTC").to_pydatetime()
    assert first.urgency in {"Expected", "Future"} and first.certainty == "Likely"
    assert {(a.model_id, a.model_version) for a in alerts} == {(trained.model_id,
                                                                trained.version)}
    # one warning per expected crossing, however many events see it coming
    expected_at = [a.message.split(" at ")[-1] for a in alerts]
    assert len({a.id for a in alerts}) == len(set(expected_at)) == len(alerts)


def test_anomalies_match_the_interval_recomputed(
        trained: TrainedModel, i94_after_cutoff: list[Envelope], tmp_path: Path) -> None:
    _, book = registry_book(tmp_path, trained)
    engine = engine_with({"id": "i94-unusual", "domain": "traffic",
                          "condition": {"type": "anomaly", "series": "i94:volume",
                                        "attribute": "volume", "count": 2},
                          "alert": ALERT}, book)
    got = len([a for batch in range(0, len(i94_after_cutoff), 10)
               for a in engine.evaluate(i94_after_cutoff[batch:batch + 10])])

    grid = trained.grid or {}
    times = pd.date_range(pd.Timestamp(grid["start"], unit="s", tz="UTC"),
                          periods=len(grid["yhat"]), freq="h")
    band = pd.DataFrame({"lower": grid["lower"], "upper": grid["upper"]}, index=times)
    streak = expected = 0
    # the file repeats some hours (one row per weather condition, one record id): the
    # same source record is one event, applied once to the streak
    seen: set[str] = set()
    once = [e for e in i94_after_cutoff if not (e.id in seen or seen.add(e.id))]
    for e in once:
        row = band.loc[pd.Timestamp(e.time)]
        outside = not (row["lower"] <= e.attributes["volume"] <= row["upper"])
        streak = streak + 1 if outside else 0
        expected += streak == 2
    assert got == expected


def test_retrained_model_is_swapped_in_without_restart(
        trained: TrainedModel, shared_data: Path, tmp_path: Path) -> None:
    registry, book = registry_book(tmp_path, trained)
    engine = engine_with({"id": "ahead", "domain": "traffic",
                          "condition": {"type": "forecast_exceedance",
                                        "series": "i94:volume", "op": ">", "value": 4000,
                                        "horizon": "3h"}, "alert": ALERT}, book)
    newer = train_series(spec(shared_data, datetime(2018, 9, 10, 12)))
    assert newer.version != trained.version
    registry.save(newer)
    assert book.refresh(registry.newest_grids()) == ["i94:volume"]
    assert book.refresh(registry.newest_grids()) == []  # nothing newer: no reload
    feed = load_feed(DEMO_DIR / "feeds/i94_traffic.yaml")
    noon = pd.Timestamp(datetime(2018, 9, 10, 12), tz="America/Chicago")
    later = [e for e in FileSource(feed).run() if isinstance(e, Envelope)
             and noon < e.time <= noon + pd.Timedelta(hours=12)]
    alerts = engine.evaluate(later)
    assert alerts and {a.model_version for a in alerts} == {newer.version}


def test_grid_round_trip_and_lookups() -> None:
    grid = ForecastGrid("s", "s:m", "v1", start=datetime(2024, 1, 1, tzinfo=UTC).timestamp(),
                        step=3600.0, yhat=np.array([1.0, 2.0, np.nan, 4.0]),
                        lower=np.zeros(4), upper=np.array([2.0, 3.0, np.nan, 5.0]))
    again = ForecastGrid.from_dict(grid.to_dict())
    assert np.array_equal(again.yhat, grid.yhat, equal_nan=True)
    times = grid.start + np.array([-7200.0, 0.0, 1.0, 3 * 3600.0, 9 * 3600.0])
    assert grid.first_crossing(times, "yhat", ">=", 4.0, 4 * 3600).tolist() == [-1, 3, 3,
                                                                                3, -1]
    assert grid.nearest(times).tolist() == [-1, 0, 0, 3, -1]


def test_a_crossing_under_way_is_one_episode() -> None:
    grid = ForecastGrid("s", "s:m", "v1", start=0.0, step=3600.0,
                        yhat=np.array([1.0, 5.0, 6.0, 1.0, 7.0]), lower=np.zeros(5),
                        upper=np.full(5, 9.0))
    assert [grid.episode_start(k, "yhat", ">", 4.0) for k in (1, 2, 4)] == [1, 1, 4]
