"""Event → alert latency: p50/p99 from an event's production to its alert in the store,
with events offered at a steady rate (default 5,000 events/s for 60 s) to a running
worker on the embedded broker, with the ``workload.py`` rules (50 rules × 1,000 zones,
~2 % of events alerting).

Each event is stamped with the wall time it is produced at (its event time), so an
alert's ``event_time`` is its event's production time; a poller reads new alert rows
every 10 ms and records when it first sees each. Prints one JSON object.

Usage: python bench/latency.py [--rate 5000] [--seconds 60] [--database-url URL]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import numpy as np
import yaml
from confluent_kafka import Producer
from sqlalchemy import select
from workload import events, rules, write_grid

from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import Settings
from citywatch.ops.store.schema import AlertRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.streams.broker import EmbeddedBroker
from citywatch.streams.envelope import encode_envelope
from citywatch.streams.kafka_admin import KafkaAdmin


def offer(bootstrap: str, topic: str, rate: int, seconds: float) -> int:
    """Produce ``rate`` events/s for ``seconds``, each stamped with its production time,
    in 10 ms ticks; returns how many were produced."""
    base = events(min(rate * 10, 100_000))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": 1,
                         "enable.idempotence": False})
    per_tick = max(1, rate // 100)
    sent = 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        due = int(elapsed * rate) + per_tick
        while sent < due:
            e = base[sent % len(base)]
            stamped = msgspec.structs.replace(
                e, id=f"{e.id}-{sent}", time=datetime.now(UTC))
            producer.produce(topic, encode_envelope(stamped), key=e.entity_id.encode())
            sent += 1
        producer.poll(0)
        time.sleep(max(0.0, started + (due - per_tick) / rate + 0.01
                       - time.perf_counter()))
    producer.flush(30)
    return sent


def watch(store: IncidentStore, seen: dict[str, float], stop: threading.Event,
          since: datetime) -> None:
    """Record how long after its event each alert of events since ``since`` is first
    seen in the store (polled every 10 ms)."""
    query = select(AlertRow.id, AlertRow.event_time)
    while not stop.is_set():
        now = time.time()
        with store.engine.connect() as conn:
            rows = conn.execute(query.where(AlertRow.event_time >= since)).all()
        for alert_id, event_time in rows:
            if alert_id not in seen:
                seen[alert_id] = now - event_time.replace(tzinfo=UTC).timestamp()
        if rows:
            since = max(r[1] for r in rows).replace(tzinfo=UTC) - timedelta(seconds=5)
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        workdir = Path(tmp)
        rules_path = workdir / "rules.yaml"
        rules_path.write_text(yaml.safe_dump(rules(
            "typical", str(write_grid(workdir / "grid.geojson"))).model_dump(mode="json")))
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="lat.",
                            app_id="bench-latency", rules_path=rules_path,
                            database_url=args.database_url
                            or f"sqlite:///{workdir / 'latency.db'}",
                            data_dir=workdir / "data")
        store = IncidentStore(settings.database_url)
        store.create_schema()
        seen: dict[str, float] = {}
        stop = threading.Event()
        with KafkaAdmin(broker.bootstrap) as admin:
            admin.ensure_topics(settings.topics.all)
            with WorkerProcess(settings, broker.bootstrap, workdir / "worker.log") as worker:
                offer(broker.bootstrap, settings.topics.raw("environment"), 10, 0.2)
                wait_until_drained(admin, settings, alive=worker.alive)
                watcher = threading.Thread(target=watch, args=(store, seen, stop,
                                                               datetime.now(UTC)))
                watcher.start()
                started = time.perf_counter()
                produced = offer(broker.bootstrap, settings.topics.raw("environment"),
                                 args.rate, args.seconds)
                offered = produced / (time.perf_counter() - started)
                wait_until_drained(admin, settings, alive=worker.alive)
                time.sleep(0.2)
                stop.set()
                watcher.join()
        stored = store.counts()["alerts_total"]
        store.close()
    latencies = np.array(list(seen.values())) * 1000
    print(json.dumps({
        "offered_events_per_s": round(offered), "events": produced,
        "alerts_measured": len(latencies), "alerts_stored": stored,
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "max_ms": round(float(latencies.max()), 1)}))


if __name__ == "__main__":
    main()
