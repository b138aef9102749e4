"""Prometheus metrics of a real worker running the demo feeds, the API's /metrics, and
``citywatch status --json`` over the same pipeline."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

from backends import ON_POSTGRESQL
from prometheus_client.parser import text_string_to_metric_families

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.kafka_sink import PumpReport
from citywatch.connectors.runner import produce
from citywatch.ops.demo import demo_feeds
from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import Settings
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.streams.kafka_admin import KafkaAdmin

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

    from citywatch.ops.api.app import create_api


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text.decode())
            for sample in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@ON_POSTGRESQL
def test_worker_metrics_and_status_on_the_demo_feeds(settings: Settings,
                                                     tmp_path: Path) -> None:
    port = _free_port()
    settings = settings.model_copy(update={"metrics_port": port,
                                           "broker_check_seconds": 0.5})
    bootstrap = settings.kafka_bootstrap
    assert bootstrap is not None
    report = PumpReport()
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all, settings.topic_partitions)
        for feed in demo_feeds():  # queued before the worker starts: it starts behind
            produce(FileSource(load_feed(feed)), bootstrap, settings.topics, report=report)
        raw_records = report.events  # connector rejects go to the dead-letter topic
        highest_lag = 0.0
        with WorkerProcess(settings, bootstrap, tmp_path / "worker.log") as worker:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    samples = _scrape(port)
                except OSError:
                    time.sleep(0.2)
                    continue
                highest_lag = max(highest_lag, _value(samples, "citywatch_consumer_lag",
                                                      stage="ingest"))
                if _value(samples, "citywatch_records_total", stage="ingest",
                          direction="in") >= raw_records:
                    break
                time.sleep(0.2)
            wait_until_drained(admin, settings, alive=worker.alive)
            time.sleep(1.5)  # one more lag measurement after draining
            samples = _scrape(port)
            env = {**os.environ, **settings.to_env()}
            status = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "status",
                                     "--json"], capture_output=True, text=True, env=env,
                                    timeout=60)
    store = IncidentStore(settings.database_url)
    stored = store.counts()["alerts_total"]
    store.close()

    assert highest_lag > 0  # the lag gauge saw the backlog
    assert _value(samples, "citywatch_records_total", stage="ingest",
                  direction="in") == raw_records
    dead = {stage: _value(samples, "citywatch_dead_letters_total", stage=stage)
            for stage in ("ingest", "rules", "store")}
    events = _value(samples, "citywatch_records_total", stage="ingest", direction="out")
    assert events == report.events - dead["ingest"]
    assert _value(samples, "citywatch_records_total", stage="rules", direction="in") == events
    assert _value(samples, "citywatch_records_total", stage="store", direction="out") == stored
    assert stored > 0
    for stage in ("ingest", "rules", "zone_rules", "store"):
        assert ("citywatch_consumer_lag", (("stage", stage),)) in samples
        assert _value(samples, "citywatch_consumer_lag", stage=stage) == 0
    assert _value(samples, "citywatch_store_write_seconds_count") > 0
    assert _value(samples, "citywatch_rule_evaluation_seconds_count") > 0
    assert sum(v for (name, _), v in samples.items()
               if name == "citywatch_ruleset_info") == 1

    assert status.returncode == 0, status.stderr
    said = json.loads(status.stdout)
    assert said["broker"]["reachable"] and said["store"]["reachable"]
    assert set(said["broker"]["lag"]) == {"ingest", "rules", "zone_rules", "store"}
    assert said["store"]["alerts_total"] == stored
    assert said["store"]["last_alert_at"] is not None
    assert said["broker"]["dead_letters_last_hour"] == report.dead_letters + sum(
        dead.values())


def test_api_metrics_count_requests_and_incidents(settings: Settings,
                                                  tmp_path: Path) -> None:
    client = TestClient(create_api(settings))
    assert client.get("/health").status_code == 200
    assert client.get("/incidents").status_code == 401
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(client.get("/metrics").text)
               for s in f.samples}
    assert samples[("citywatch_api_requests_total", (("method", "GET"), ("route", "/health"),
                                                     ("status", "200")))] == 1
    assert samples[("citywatch_api_requests_total", (
        ("method", "GET"), ("route", "/incidents"), ("status", "401")))] == 1
    assert samples[("citywatch_incidents", (("status", "new"),))] == 0
