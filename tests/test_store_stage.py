"""The store stage's loop on the real broker and a real store: every alert stored once,
what is not an alert or what the store refuses dead-lettered alone, offsets committed
only for what was written."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import msgspec
from confluent_kafka import Producer
from factories import make_alert
from kafka_helpers import read_topic
from sqlalchemy import select

from citywatch.ops.store.schema import AlertRow
from citywatch.ops.store.sink import StoreSink
from citywatch.ops.store.store import IncidentStore
from citywatch.streams.alert import encode_alert
from citywatch.streams.deadletter import decode_deadletter
from citywatch.streams.kafka_admin import KafkaAdmin
from citywatch.streams.settings import StreamSettings
from citywatch.streams.store_stage import StoreLoop, store_group


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value)
    assert producer.flush(30) == 0


def _run_until_drained(loop: StoreLoop, admin: KafkaAdmin, settings: StreamSettings) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop.is_set,))
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while admin.group_lag(store_group(settings), [settings.topics.alerts]):
            assert time.monotonic() < deadline, "the store stage did not drain"
            assert thread.is_alive()
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)


def test_store_stage_stores_each_alert_once_and_dead_letters_alone(broker: str,
                                                                   tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    settings = StreamSettings(topic_prefix=f"t{tag}.", app_id=f"cw-{tag}", store_batch=7)
    topics = settings.topics
    alerts = [make_alert(i) for i in range(40)]
    # a producer's alert with a naive time: it decodes, and the store refuses it
    naive = msgspec.structs.replace(make_alert(99), event_time=datetime(2022, 1, 5, 12))
    values = ([encode_alert(a) for a in alerts[:20]] + [b"not an alert", encode_alert(naive)]
              + [encode_alert(a) for a in alerts[20:]]
              + [encode_alert(a) for a in alerts[:10]])  # a replay of ten
    store = IncidentStore(f"sqlite:///{tmp_path / 'incidents.db'}")
    store.create_schema()
    reports: list[dict] = []
    with KafkaAdmin(broker) as admin:
        admin.ensure_topics(topics.all)
        _produce(broker, topics.alerts, values)
        _run_until_drained(StoreLoop(settings, broker, StoreSink(store), reports.append),
                           admin, settings)
        with store.engine.connect() as conn:
            stored = conn.scalars(select(AlertRow.id)).all()
        assert sorted(stored) == sorted(a.id for a in alerts)  # 0 lost, 0 doubled

        letters = [decode_deadletter(v) for v in read_topic(broker, topics.deadletter)]
        assert sorted((d.stage, d.locator) for d in letters) == sorted(
            [("store", f"{topics.alerts}/0@20"), ("store", naive.id)])
        assert {d.locator: d.error.split(":")[0] for d in letters} == {
            f"{topics.alerts}/0@20": "not an alert", naive.id: "refused by the store"}

        total = {}
        for report in reports:
            for key, value in report.items():
                if key[0] != "store_write":
                    total[key] = total.get(key, 0) + value
        assert total == {("records_in", "store"): len(values),
                         ("records_out", "store"): 40, ("dead_letters", "store"): 2}

        # a restarted stage (same group) reads nothing again; new copies add nothing
        _produce(broker, topics.alerts, [encode_alert(a) for a in alerts])
        reports.clear()
        _run_until_drained(StoreLoop(settings, broker, StoreSink(store), reports.append),
                           admin, settings)
    assert sum(r.get(("records_in", "store"), 0) for r in reports) == 40
    assert sum(r.get(("records_out", "store"), 0) for r in reports) == 0
    assert store.counts()["alerts_total"] == 40
    store.close()
