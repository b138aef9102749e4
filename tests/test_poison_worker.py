"""Poison payloads through running workers on the embedded broker: each bad message is
one dead letter with its reason and place, both workers stay up, every valid event
alerts as in a clean run, and restarting re-crashes on nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import msgspec
import yaml
from backends import ON_POSTGRESQL
from kafka import KafkaProducer
from kafka_helpers import read_topic
from sqlalchemy import select
from test_poison_and_store import NOW, POISON, valid

from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import Settings
from citywatch.ops.store.schema import AlertRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import load_ruleset
from citywatch.streams.deadletter import decode_deadletter
from citywatch.streams.envelope import Envelope
from citywatch.streams.kafka_admin import KafkaAdmin

RULES = {"rules": [
    {"id": "pm25-over-20", "domain": "environment",
     "condition": {"type": "threshold", "attribute": "pm25", "op": ">", "value": 20},
     "alert": {"severity": "Moderate", "category": "Env", "message": "{entity_id}"}},
    {"id": "pm25-rising", "domain": "environment",
     "condition": {"type": "persistence", "count": 2, "condition": {
         "type": "threshold", "attribute": "pm25", "op": ">", "value": 12}},
     "alert": {"severity": "Minor", "category": "Env", "message": "{entity_id}"}},
]}


def stored_ids(url: str) -> set[str]:
    store = IncidentStore(url)
    with store.engine.connect() as conn:
        ids = set(conn.execute(select(AlertRow.id)).scalars())
    store.close()
    return ids


@ON_POSTGRESQL
def test_poison_between_valid_events_through_two_workers(settings: Settings,
                                                         tmp_path: Path) -> None:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(RULES))
    settings = settings.model_copy(update={"rules_path": rules_path, "topic_partitions": 2})
    bootstrap = settings.kafka_bootstrap or ""
    topics = settings.topics
    # each valid event twice per entity (so persistence fires), a poison payload between
    payloads: list[tuple[bytes | None, bytes]] = []
    good: list[bytes] = []
    for n, bad in enumerate(POISON.values()):
        pair = [valid(n), valid(n, source_record_id=f"{n}b",
                                time=NOW - timedelta(hours=n) + timedelta(minutes=30))]
        good += pair
        # keyed by entity as connectors do (one entity's events stay in order)
        payloads += [(f"s{n}".encode(), pair[0]), (None, bad), (f"s{n}".encode(), pair[1])]
    events = [msgspec.json.decode(p, type=Envelope) for p in good]
    expected = {a.id for a in RuleEngine.from_ruleset(load_ruleset(rules_path))
                .evaluate(sorted(events, key=lambda e: e.time))}
    assert len(expected) > 10

    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(topics.all, settings.topic_partitions)
        producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
        for key, payload in payloads:
            producer.send(topics.raw("environment"), payload, key=key)
        producer.flush()
        producer.close()
        workers = [WorkerProcess(settings, bootstrap, tmp_path / f"worker{i}.log").start()
                   for i in range(2)]
        try:
            wait_until_drained(admin, settings, alive=lambda: all(w.alive() for w in workers))
            assert all(w.alive() for w in workers)
        finally:
            codes = [w.stop() for w in workers]
        assert codes == [0, 0]
        for i in range(2):  # each said once that it is ready, and with what
            said = (tmp_path / f"worker{i}.log").read_text()
            assert said.count("ready: consuming ") == 1, said[-2000:]
            ready = next(line for line in said.splitlines() if line.startswith("ready: "))
            assert topics.events in ready and "rules version " in ready
            assert f"store {settings.database_url}" in ready or "store postgresql" in ready
        letters = [decode_deadletter(v) for v in read_topic(bootstrap, topics.deadletter)]
        assert len(letters) == len(POISON)
        assert all(dl.stage == "ingest" and dl.error and
                   dl.locator.startswith(f"{topics.raw('environment')}/") for dl in letters)
        assert stored_ids(settings.database_url) == expected

        with WorkerProcess(settings, bootstrap, tmp_path / "restarted.log") as restarted:
            wait_until_drained(admin, settings, alive=restarted.alive)
            assert restarted.alive()
        assert len(read_topic(bootstrap, topics.deadletter)) == len(POISON)
        assert stored_ids(settings.database_url) == expected
