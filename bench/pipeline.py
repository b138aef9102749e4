"""Benchmark (b) of the rules issue: events through (a) a bare one-event-per-message
Faust agent doing decode + one threshold and (b) the citywatch worker (ingest: decode and
validate → columnar micro-batches → zone lookup over 1,000 zones → 50 rules → alerts,
one per message → incident store), both on the embedded broker, in one run.

Events are real EPA PM2.5 readings, repeated with distinct record ids; the rules are
``workload.py``'s (typical alerting: ~2 % of events). Prints one JSON object with both
rates and their ratio.

Usage: python bench/pipeline.py [--events 300000] [--batch 2000] [--alerting typical]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from confluent_kafka import Producer
from workload import events, rules, write_grid

from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import Settings
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.streams.broker import EmbeddedBroker
from citywatch.streams.envelope import encode_envelope
from citywatch.streams.kafka_admin import KafkaAdmin


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    """One message per event, as connectors write them (librdkafka: ~0.5M msg/s here)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1,
                         "enable.idempotence": False, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 2_000_000})
    for i, p in enumerate(payloads):
        producer.produce(topic, p)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)


def bench_bare(bootstrap: str, payloads: list[bytes], workdir: Path) -> dict[str, float]:
    topic = "bench.bare"
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics([topic])
    produce(bootstrap, topic, payloads)
    result = workdir / "bare.json"
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic,
           "BENCH_TOTAL": str(len(payloads)), "BENCH_RESULT": str(result),
           "BENCH_DATADIR": str(workdir / "bare-data")}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "bare_faust_app.py"),
                             "worker", "-l", "warn"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.1)
        data = json.loads(result.read_text())
    finally:
        proc.terminate()
        proc.wait(30)
    seconds = data["last"] - data["first"]
    return {"events": data["count"], "seconds": round(seconds, 3),
            "events_per_s": round(data["count"] / seconds)}


def bench_pipeline(bootstrap: str, payloads: list[bytes], workdir: Path, batch: int,
                   alerting: str) -> dict[str, float]:
    """Start the worker, let both stages join (one warm-up event), then produce all events
    at once and time until every stage has drained."""
    grid_path = write_grid(workdir / "grid.geojson")
    rules_path = workdir / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rules(alerting, str(grid_path)).model_dump(
        mode="json")))
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix="bench.", app_id="bench-cw",
                        database_url=f"sqlite:///{workdir / 'bench.db'}",
                        data_dir=workdir / "cw-data", rules_path=rules_path,
                        batch_max_events=batch)
    topic = settings.topics.raw("environment")
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all)
        with WorkerProcess(settings, bootstrap, workdir / "worker.log") as worker:
            produce(bootstrap, topic, payloads[:1])
            wait_until_drained(admin, settings, alive=worker.alive)
            started = time.perf_counter()
            produce(bootstrap, topic, payloads[1:])
            wait_until_drained(admin, settings, alive=worker.alive, poll=0.1)
            seconds = time.perf_counter() - started
    total = len(payloads) - 1
    store = IncidentStore(settings.database_url)
    alerts = store.counts()["alerts_total"]
    store.close()
    return {"events": total, "seconds": round(seconds, 3),
            "events_per_s": round(total / seconds), "alerts_stored": alerts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--bare-events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--alerting", choices=["typical", "heavy"], default="typical")
    args = parser.parse_args()
    payloads = [encode_envelope(e) for e in events(args.events)]
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        workdir = Path(tmp)
        bare = bench_bare(broker.bootstrap, payloads[:args.bare_events], workdir)
        pipeline = bench_pipeline(broker.bootstrap, payloads, workdir, args.batch,
                                  args.alerting)
    print(json.dumps({"bare_faust": bare, "citywatch_pipeline": pipeline,
                      "ratio": round(pipeline["events_per_s"] / bare["events_per_s"], 2)}))


if __name__ == "__main__":
    main()
