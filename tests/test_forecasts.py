"""Forecast backtests: metrics proven on synthetic series with known answers, then the
real I-94 and Beijing PRSA files through `citywatch forecasts evaluate`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from citywatch.forecasts.backtest import backtest
from citywatch.forecasts.series import load_series

HOURS = pd.date_range("2024-01-01", periods=24 * 7 * 12, freq="h")


def test_pure_weekly_pattern_gives_seasonal_naive_mae_zero() -> None:
    weekly = pd.Series(np.tile(np.sin(np.arange(168) / 7) * 100 + 500, 12), index=HOURS)
    result = backtest(weekly, horizon=24, folds=3, models=("seasonal_naive",))
    assert result["seasonal_naive"]["mae"] == 0.0
    assert result["seasonal_naive"]["mape"] == 0.0
    assert result["seasonal_naive"]["folds"] == 3


def test_linear_trend_naive_error_is_slope_times_season_and_prophet_learns_it() -> None:
    trend = pd.Series(2.0 * np.arange(len(HOURS)) + 100, index=HOURS)
    result = backtest(trend, horizon=24, folds=2)
    assert result["seasonal_naive"]["mae"] == pytest.approx(2.0 * 168)
    assert result["prophet"]["mae"] < 5  # a straight line is what Prophet's trend is
    assert result["selected"]["model"] == "prophet"


def test_na_and_duplicated_timestamps_are_explicit() -> None:
    csv = io.StringIO("t,v\n"
                      "2024-01-01 00:00,10\n2024-01-01 00:00,20\n"   # duplicate → mean 15
                      "2024-01-01 01:00,NA\n"                       # NA stays missing
                      "2024-01-01 04:00,40\n")                      # 02:00, 03:00 are a gap
    series, report = load_series(csv, ["t"], "v")
    assert series.iloc[0] == 15.0
    assert report.duplicates == 1 and report.duplicated_timestamps == 1
    assert report.missing == 3 and report.gaps == 1 and report.largest_gap_hours == 3.0
    assert np.isnan(series.iloc[1:4]).all() and series.iloc[4] == 40.0


def test_backtest_ignores_missing_points_when_scoring() -> None:
    weekly = pd.Series(np.tile(np.arange(168.0), 12), index=HOURS)
    weekly.iloc[-10:] = np.nan
    result = backtest(weekly, horizon=24, folds=2, models=("seasonal_naive",))
    assert result["seasonal_naive"]["mae"] == 0.0
    assert result["seasonal_naive"]["points"] == 24 + 14


def _evaluate(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "forecasts",
                             "evaluate", *args, "--json"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_i94_selected_model_is_no_worse_than_naive_on_later_folds(shared_data: Path) -> None:
    result = _evaluate("--csv", str(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv"),
                       "--time", "date_time", "--value", "traffic_volume",
                       "--holiday-column", "holiday")
    assert result["series"]["duplicated_timestamps"] == 5445  # SOURCES.md
    assert result["series"]["largest_gap_hours"] == 307.75 * 24
    assert result["prophet"]["folds"] == result["seasonal_naive"]["folds"] == 18
    chosen = result["selected"]
    assert chosen["mae"] <= 1.10 * chosen["later_folds_mae"]["seasonal_naive"]
    assert 0 < result["prophet"]["coverage"] <= 1


def test_prsa_combines_time_columns(shared_data: Path) -> None:
    result = _evaluate("--csv", str(shared_data / "air_quality/"
                                    "PRSA_Data_Aotizhongxin_20130301-20170228.csv"),
                       "--time", "year,month,day,hour", "--value", "PM2.5", "--folds", "6")
    assert result["series"]["rows"] == 35064 and result["series"]["missing"] > 0
    assert result["prophet"]["mae"] > 0 and result["seasonal_naive"]["mae"] > 0
    assert result["selected"]["model"] in {"prophet", "seasonal_naive"}


def test_unknown_column_is_refused(shared_data: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "forecasts",
                             "evaluate", "--csv",
                             str(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv"),
                             "--time", "when", "--value", "traffic_volume"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no column 'when'" in result.stderr


def test_registry_round_trip_predicts_the_same_values(shared_data: Path, tmp_path: Path) -> None:
    """Train on real data (both kinds), save, load: the loaded model predicts the same."""
    from citywatch.forecasts.training import SeriesSpec, train_many
    from citywatch.ops.store.forecast_models import ModelRegistry
    from citywatch.ops.store.store import IncidentStore

    specs = [SeriesSpec(key="i94:volume", value="traffic_volume", time=["date_time"],
                        csv=str(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv"),
                        holiday_column="holiday", folds=4),
             SeriesSpec(key="aotizhongxin:pm25", value="PM2.5",
                        time=["year", "month", "day", "hour"], folds=4,
                        csv=str(shared_data / "air_quality/"
                                "PRSA_Data_Aotizhongxin_20130301-20170228.csv"))]
    store = IncidentStore(f"sqlite:///{tmp_path / 'models.db'}")
    store.create_schema()
    registry = ModelRegistry(store)
    trained = {m.series_key: m for m in train_many(specs, workers=2, progress=registry.save)}
    assert [r.series_key for r in registry.list()] == ["aotizhongxin:pm25", "i94:volume"]
    from citywatch.forecasts.models import ProphetModel, SeasonalNaive

    for key, model in trained.items():
        row, loaded = registry.load(key)
        assert (row.model_id, row.version) == (model.model_id, model.version)
        original = (ProphetModel if model.kind == "prophet" else SeasonalNaive).from_json(
            model.serialized).predict(48)
        again = loaded.predict(48)
        assert np.allclose(original["yhat"], again["yhat"], equal_nan=True)
        assert again.index[0] > pd.Timestamp(row.train_end.replace(tzinfo=None))
        assert row.metrics["series"]["rows"] > 0


def test_a_fitted_prophet_model_predicts_the_same_after_the_registry(shared_data: Path,
                                                                     tmp_path: Path) -> None:
    from citywatch.forecasts.models import ProphetModel
    from citywatch.forecasts.training import TrainedModel
    from citywatch.ops.store.forecast_models import ModelRegistry
    from citywatch.ops.store.store import IncidentStore

    series, _ = load_series(str(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv"),
                            ["date_time"], "traffic_volume")
    window = series.iloc[-24 * 7 * 4:]
    fitted = ProphetModel().fit(window)
    expected = fitted.predict(24)
    store = IncidentStore(f"sqlite:///{tmp_path / 'models.db'}")
    store.create_schema()
    registry = ModelRegistry(store)
    registry.save(TrainedModel("i94", "prophet", "v1", window.index[0].to_pydatetime(),
                               window.index[-1].to_pydatetime(), {}, {}, fitted.to_json()))
    _, loaded = registry.load("i94")
    pd.testing.assert_frame_equal(loaded.predict(24), expected)


def test_scheduled_retraining_saves_only_new_versions(shared_data: Path, tmp_path: Path) -> None:
    """`forecasts train --every` is the retraining process beside the workers: a round on
    unchanged data keeps the version (workers have nothing to swap)."""
    import os
    import subprocess
    import sys

    import yaml

    from citywatch.ops.store.forecast_models import ModelRegistry
    from citywatch.ops.store.store import IncidentStore

    config = tmp_path / "series.yaml"
    config.write_text(yaml.safe_dump({"series": [{
        "key": "i94:volume", "time": ["date_time"], "value": "traffic_volume",
        "csv": str(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv"),
        "folds": 2, "timezone": "America/Chicago"}]}))
    url = f"sqlite:///{tmp_path / 'models.db'}"
    result = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "forecasts", "train",
                             str(config), "--workers", "1", "--every", "0.1", "--rounds", "2"],
                            env={**os.environ, "CITYWATCH_DATABASE_URL": url},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("i94:volume: ") == 2 and "(unchanged)" in result.stdout
    store = IncidentStore(url)
    rows = ModelRegistry(store).list()
    assert len(rows) == 1 and rows[0].grid and len(rows[0].grid["yhat"]) == 168
    store.close()


def test_series_from_the_events_topic_matches_the_file(broker: str, shared_data: Path,
                                                       tmp_path: Path) -> None:
    """A series is built from what the pipeline saw: frames on the events topic."""
    import uuid

    from kafka import KafkaProducer

    from citywatch.connectors.file import FileSource, load_feed
    from citywatch.forecasts.series import series_from_events
    from citywatch.forecasts.training import SeriesSpec
    from citywatch.ops.settings import DEMO_DIR
    from citywatch.streams.batch import encode_batch
    from citywatch.streams.envelope import Envelope
    from citywatch.streams.kafka_admin import KafkaAdmin, read_topic

    topic = f"series-{uuid.uuid4().hex[:8]}.events"
    events = [e for e in FileSource(load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")).run()
              if isinstance(e, Envelope)]
    with KafkaAdmin(broker) as admin:
        admin.ensure_topics([topic], partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker)
    for n, start in enumerate(range(0, len(events), 300)):
        producer.send(topic, encode_batch(events[start:start + 300]), partition=n % 2)
    producer.flush()
    producer.close()
    site = "360050110"
    series, report = series_from_events(read_topic(broker, topic), entity=site, attribute="pm25",
                                        freq="D", timezone="America/New_York")

    raw = pd.read_csv(DEMO_DIR / "data/epa_pm25_nyc_2022q1.csv", dtype={"Site ID": str})
    mine = raw[raw["Site ID"] == site].copy()
    mine["day"] = pd.to_datetime(mine["Date"], format="%m/%d/%Y")
    expected = mine.groupby("day")["Daily Mean PM2.5 Concentration"].mean()
    expected = expected.reindex(pd.date_range(expected.index.min(), expected.index.max(),
                                              freq="D"))
    assert np.allclose(series.to_numpy(), expected.to_numpy(), equal_nan=True)
    assert report.rows == len(mine) and report.missing == int(expected.isna().sum())
    with pytest.raises(ValueError, match="exactly one of csv or events"):
        SeriesSpec(key="k", value="pm25")
