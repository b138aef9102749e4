"""``citywatch replay`` from a deployment's Kafka topics into a sandbox, paced by event
time, with production untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import yaml
from backends import ON_SQLITE

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.kafka_sink import PumpReport
from citywatch.connectors.runner import produce
from citywatch.ops.replay import sandbox_settings
from citywatch.ops.settings import DEMO_DIR, Settings
from citywatch.ops.store.store import IncidentStore
from citywatch.streams.envelope import Envelope
from citywatch.streams.kafka_admin import KafkaAdmin


@ON_SQLITE
def test_replay_six_hours_of_i94_from_kafka_into_a_sandbox_at_3600x(
        settings: Settings, tmp_path: Path) -> None:
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    feed = DEMO_DIR / "feeds/i94_traffic.yaml"
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all, settings.topic_partitions)
        produce(FileSource(load_feed(feed)), bootstrap, settings.topics,
                report=PumpReport())  # what production's raw topics hold
        production_offsets = admin.end_offsets(settings.topics.all)
    production = IncidentStore(settings.database_url)
    production.create_schema()
    before = production.counts()

    # a busy afternoon: 6 hours from 2018-08-06 12:00 Chicago time (pandas, from
    # the CSV itself: hourly rows, repeated rows are one record)
    rows = pd.read_csv(DEMO_DIR / "data/i94_traffic_2018_tail.csv")
    rows["time"] = pd.to_datetime(rows["date_time"]).dt.tz_localize(
        "America/Chicago").dt.tz_convert("UTC")
    start = pd.Timestamp("2018-08-06 12:00", tz="America/Chicago").tz_convert("UTC")
    end = start + timedelta(hours=6)
    window = rows[(rows["time"] >= start) & (rows["time"] <= end)].drop_duplicates(
        "date_time")
    threshold = next(r for r in yaml.safe_load((DEMO_DIR / "rules.yaml").read_text())[
        "rules"] if r["id"] == "i94-heavy-volume")["condition"]["value"]
    heavy = int((window["traffic_volume"] >= threshold).sum())
    assert len(window) == 7 and heavy > 0

    env = {**os.environ, **settings.to_env(), "CITYWATCH_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "citywatch.ops.cli", "replay", "--from-kafka", "--from",
         start.isoformat(), "--to", end.isoformat(), "--speed", "3600", "--sandbox",
         "afternoon", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events_by_domain"]["traffic"] == len(window)
    assert 5.5 <= summary["replay_seconds"] <= 8.0  # 6 h at 3600x: 6 s, paced
    sandbox = sandbox_settings(settings.model_copy(update={"data_dir": tmp_path}),
                               "afternoon")
    assert summary["store"] == sandbox.database_url
    heavy_alerts = IncidentStore(sandbox.database_url)
    assert heavy_alerts.counts()["alerts_by_domain"].get("traffic", 0) >= heavy
    heavy_alerts.close()
    # production: not one message more on its topics, not one row more in its store
    with KafkaAdmin(bootstrap) as admin:
        assert admin.end_offsets(settings.topics.all) == production_offsets
        sandboxed = sum(admin.end_offsets(sandbox.topics.raw_all).values())
    assert sandboxed == len(window)
    assert production.counts() == before
    production.close()


@ON_SQLITE
def test_backtest_reads_the_deployments_kafka_topics(settings: Settings,
                                                     tmp_path: Path) -> None:
    """``--events kafka``: what production's raw topics hold, bounded by event time."""
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    feed = DEMO_DIR / "feeds/usgs_earthquakes.yaml"
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all, settings.topic_partitions)
    produce(FileSource(load_feed(feed)), bootstrap, settings.topics, report=PumpReport())
    rules = DEMO_DIR / "rules.yaml"
    env = {**os.environ, **settings.to_env(), "CITYWATCH_DATA_DIR": str(tmp_path)}
    from_kafka = subprocess.run(
        [sys.executable, "-m", "citywatch.ops.cli", "backtest", "--baseline", str(rules),
         "--candidate", str(rules), "--events", "kafka", "--json"],
        capture_output=True, text=True, env=env, timeout=300)
    from_file = subprocess.run(
        [sys.executable, "-m", "citywatch.ops.cli", "backtest", "--baseline", str(rules),
         "--candidate", str(rules), "--events", str(feed), "--json"],
        capture_output=True, text=True, env=env, timeout=300)
    assert from_kafka.returncode == 0, from_kafka.stderr
    kafka_report, file_report = json.loads(from_kafka.stdout), json.loads(from_file.stdout)
    assert kafka_report["events"] == file_report["events"] > 0
    assert kafka_report["per_rule"] == file_report["per_rule"]
    assert kafka_report["totals"]["added"] == kafka_report["totals"]["removed"] == 0


@ON_SQLITE
def test_replay_from_the_internal_events_topic_takes_each_event_once(
        settings: Settings, tmp_path: Path) -> None:
    """``--kafka-topics events``: the frames ingest wrote (here written with ingest's own
    encoder, one frame twice as after an ingest crash) replayed into a sandbox, each
    event once, production untouched."""
    from kafka import KafkaProducer

    from citywatch.streams.batch import encode_batch

    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    quakes = [e for e in FileSource(load_feed(DEMO_DIR / "feeds/usgs_earthquakes.yaml")).run()
              if isinstance(e, Envelope)]
    frames = [quakes[i:i + 100] for i in range(0, len(quakes), 100)]
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all, settings.topic_partitions)
        producer = KafkaProducer(bootstrap_servers=bootstrap,
                                 max_request_size=8 * 1024 * 1024)
        for chunk in [*frames, frames[0]]:
            producer.send(settings.topics.events, encode_batch(chunk))
        producer.flush()
        producer.close()
        production_offsets = admin.end_offsets(settings.topics.all)
    # independently: the quakes of the CSV inside the bounds, by pandas
    features = json.loads((DEMO_DIR / "data/usgs_all_week.geojson").read_text())["features"]
    times = pd.to_datetime(pd.Series([f["properties"]["time"] for f in features]),
                           unit="ms", utc=True)
    start, end = times.min() + timedelta(days=2), times.min() + timedelta(days=4)
    wanted = int(((times >= start) & (times <= end)).sum())
    assert 0 < wanted < len(quakes)

    env = {**os.environ, **settings.to_env(), "CITYWATCH_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "citywatch.ops.cli", "replay", "--from-kafka",
         "--kafka-topics", "events", "--from", start.isoformat(), "--to", end.isoformat(),
         "--sandbox", "quakes", "--json"],
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events_by_domain"] == {"disaster": wanted}
    sandbox = sandbox_settings(settings.model_copy(update={"data_dir": tmp_path}), "quakes")
    with KafkaAdmin(bootstrap) as admin:
        assert admin.end_offsets(settings.topics.all) == production_offsets
        assert sum(admin.end_offsets(sandbox.topics.raw_all).values()) == wanted
    wrong = subprocess.run(
        [sys.executable, "-m", "citywatch.ops.cli", "replay", "--from-kafka",
         "--kafka-topics", "alerts", "--sandbox", "quakes"],
        capture_output=True, text=True, env=env, timeout=60)
    assert wrong.returncode == 2 and "--kafka-topics" in wrong.stderr
