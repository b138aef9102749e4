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
    result = backtest(weekly, horizon=24, folds=3, seasons=[168],
                      candidates=("seasonal_naive_168",))
    block = result["candidates"]["seasonal_naive_168"]
    assert block["mae"] == 0.0 and block["mape"] == 0.0
    assert block["mase"] is None  # the in-sample seasonal naive is exact: no scale
    assert block["folds"] == 3


def test_linear_trend_naive_error_is_slope_times_season_and_prophet_learns_it() -> None:
    trend = pd.Series(2.0 * np.arange(len(HOURS)) + 100, index=HOURS)
    result = backtest(trend, horizon=24, folds=2, seasons=[168],
                      candidates=("naive", "seasonal_naive_168", "prophet"))
    assert result["candidates"]["seasonal_naive_168"]["mae"] == pytest.approx(2.0 * 168)
    # persistence is off by 2 per hour ahead: 2 * mean(1..24)
    assert result["candidates"]["naive"]["mae"] == pytest.approx(2.0 * 12.5)
    assert result["candidates"]["prophet"]["mae"] < 5  # a straight line is Prophet's trend
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
    result = backtest(weekly, horizon=24, folds=2, seasons=[168],
                      candidates=("seasonal_naive_168",))
    assert result["candidates"]["seasonal_naive_168"]["mae"] == 0.0
    assert result["candidates"]["seasonal_naive_168"]["points"] == 24 + 14


def _evaluate(*args: str) -> dict:
    result = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "forecasts",
                             "evaluate", *args, "--json"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _no_worse_than_every_baseline(result: dict) -> None:
    """Every candidate reported with its metrics; the selection's later-fold MAE is at
    most the best baseline's there (persistence, seasonal naive per seasonality)."""
    later = result["later_folds"]
    for block in result["candidates"].values():
        assert {"mae", "mape", "mase", "coverage"} <= block.keys()
        assert block["mae"] > 0 and block["mase"] > 0 and 0 < block["coverage"] <= 1
    baselines = [later[b]["mae"] for b in result["baselines"]]
    assert len(baselines) == 1 + len(result["seasons"])
    assert result["selected"]["mae"] <= min(baselines)
    assert result["selected"]["best_baseline_later"]["mae"] == min(baselines)


def test_i94_selection_is_no_worse_than_every_baseline_on_later_folds(
        shared_data: Path) -> None:
    result = _evaluate("--csv", str(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv"),
                       "--time", "date_time", "--value", "traffic_volume",
                       "--holiday-column", "holiday")
    assert result["series"]["duplicated_timestamps"] == 5445  # SOURCES.md
    assert result["series"]["largest_gap_hours"] == 307.75 * 24
    assert result["seasons"] == [24, 168] and len(result["origins"]) == 18
    assert {"naive", "seasonal_naive_24", "seasonal_naive_168", "ets", "theta", "mstl",
            "prophet"} <= result["candidates"].keys()
    assert result["later_folds"]["prophet"]["folds"] == 9
    _no_worse_than_every_baseline(result)


def test_prsa_pm25_selection_is_no_worse_than_persistence(shared_data: Path) -> None:
    """The series where Prophet lost to persistence (94.4 vs 52.3 on the later folds)."""
    result = _evaluate("--csv", str(shared_data / "air_quality/"
                                    "PRSA_Data_Aotizhongxin_20130301-20170228.csv"),
                       "--time", "year,month,day,hour", "--value", "PM2.5", "--freq", "H")
    assert result["series"]["rows"] == 35064 and result["series"]["missing"] > 0
    assert result["series"]["freq"] == "h"
    _no_worse_than_every_baseline(result)


def test_epa_daily_pm25_selection_is_no_worse_than_every_baseline(shared_data: Path) -> None:
    """A daily series (seasonality 7): the NY/NJ metro mean of the EPA sites per day."""
    result = _evaluate("--csv", str(shared_data / "air_quality/"
                                    "epa_aqs_pm25_daily_nyc_metro_2022.csv"),
                       "--time", "Date", "--value", "Daily Mean PM2.5 Concentration",
                       "--freq", "d", "--horizon", "7", "--step", "7", "--folds", "26",
                       "--train-window", "140")
    assert result["seasons"] == [7] and result["series"]["freq"] == "D"
    _no_worse_than_every_baseline(result)


def test_mase_and_coverage_match_an_independent_computation(shared_data: Path) -> None:
    """Persistence on two real I-94 folds: MAE, MASE (scaled by the in-sample weekly
    seasonal naive) computed here with pandas alone."""
    series, _ = load_series(str(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv"),
                            ["date_time"], "traffic_volume")
    series = series.iloc[-24 * 7 * 12:]
    result = backtest(series, horizon=24, folds=2, step=168, train_window=24 * 7 * 4,
                      seasons=[168], candidates=("naive",))
    errors, scaled = [], []
    for origin in (len(series) - 24 - 168, len(series) - 24):
        train = series.iloc[origin - 24 * 7 * 4:origin]
        actual = series.iloc[origin:origin + 24]
        last = train.dropna().iloc[-1]
        err = (actual - last).abs().dropna()
        scale = (train - train.shift(168)).abs().mean()
        errors += err.tolist()
        scaled += (err / scale).tolist()
    assert result["candidates"]["naive"]["mae"] == pytest.approx(np.mean(errors), abs=1e-3)
    assert result["candidates"]["naive"]["mase"] == pytest.approx(np.mean(scaled), abs=1e-3)


def test_warning_counts_match_an_independent_computation(shared_data: Path) -> None:
    """PM2.5 > 75 µg/m³ (China's 24 h Grade II limit) on a real PRSA slice: the warnings
    of persistence and the daily seasonal naive, counted here from the readings."""
    from citywatch.forecasts.early_warning import warning_skill

    series, _ = load_series(str(shared_data / "air_quality/"
                                "PRSA_Data_Aotizhongxin_20130301-20170228.csv"),
                            ["year", "month", "day", "hour"], "PM2.5")
    series = series.iloc[:24 * 7 * 8]
    skill = warning_skill(series, threshold=75, op=">", lookahead=24, step=24, origins=30,
                          train_window=24 * 14, seasons=[24],
                          candidates=("naive", "seasonal_naive_24"))
    expected = {part: {m: {"hits": 0, "misses": 0, "false_alarms": 0}
                       for m in skill["models"]} for part in ("models", "onsets")}
    scored = 0
    for k in reversed(range(30)):
        origin = len(series) - 24 - k * 24
        train, after = series.iloc[origin - 24 * 14:origin], series.iloc[origin:origin + 24]
        if train.notna().sum() < 48 or after.isna().all():
            continue
        scored += 1
        event = bool((after > 75).any())
        persistence = bool(train.dropna().iloc[-1] > 75)
        # the seasonal naive forecasts each hour with the same hour a day earlier (two
        # days where that is missing)
        one, two = train.iloc[-24:].to_numpy(), train.iloc[-48:-24].to_numpy()
        daily = bool((np.where(np.isnan(one), two, one) > 75).any())
        for model, warned in (("naive", persistence), ("seasonal_naive_24", daily)):
            key = ("hits" if warned and event else "false_alarms" if warned
                   else "misses" if event else None)
            for part in ("models", "onsets") if not persistence else ("models",):
                if key:
                    expected[part][model][key] += 1
    assert skill["origins"] == scored
    for part in ("models", "onsets"):
        for model, counts in expected[part].items():
            assert {k: skill[part][model][k] for k in counts} == counts
    naive = expected["models"]["naive"]
    assert skill["events"] == naive["hits"] + naive["misses"] > 0
    # at an onset persistence never warns; the daily pattern does
    assert skill["onsets"]["naive"]["hits"] == skill["onsets"]["naive"]["false_alarms"] == 0


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
    from citywatch.forecasts.models import load_model

    for key, model in trained.items():
        row, loaded = registry.load(key)
        assert (row.model_id, row.version) == (model.model_id, model.version)
        assert row.metrics["backtest"]["selected"]["model"] == model.kind
        assert model.kind in row.metrics["backtest"]["candidates"]
        original = load_model(model.kind, model.serialized).predict(48)
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


def test_evaluate_warnings_command_and_its_usage_errors(shared_data: Path) -> None:
    prsa = str(shared_data / "air_quality/PRSA_Data_Aotizhongxin_20130301-20170228.csv")
    base = [sys.executable, "-m", "citywatch.ops.cli", "forecasts", "evaluate-warnings",
            "--csv", prsa, "--time", "year,month,day,hour", "--value", "PM2.5",
            "--threshold", "150"]
    done = subprocess.run([*base, "--origins", "10", "--candidates",
                           "naive,seasonal_naive_24", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    skill = json.loads(done.stdout)
    assert skill["origins"] == 10 and set(skill["models"]) == {"naive", "seasonal_naive_24"}
    assert set(skill["onsets"]) == set(skill["models"])
    assert done.stderr == ""  # no Prophet or cmdstanpy chatter
    for wrong, named in ((["--op", "=>"], "--op"), (["--freq", "fortnightly"], "--freq")):
        refused = subprocess.run([*base, *wrong], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and named in refused.stderr
        assert len(refused.stderr.splitlines()) == 1
