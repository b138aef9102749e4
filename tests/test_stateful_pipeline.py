"""Stateful rules in the running Faust worker on the embedded broker: a worker killed
mid-stream and restarted raises exactly the alerts of an uninterrupted evaluation."""

from __future__ import annotations

from pathlib import Path

import yaml
from data_helpers import STATEFUL_RULES as RULES
from data_helpers import epa_by_date, split_csv
from sqlalchemy import select

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.runner import produce
from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import Settings
from citywatch.ops.store.schema import AlertRow, IncidentRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import load_ruleset
from citywatch.streams.envelope import Envelope
from citywatch.streams.kafka_admin import KafkaAdmin


def test_killed_worker_recovers_state_and_raises_the_same_alerts(
        settings: Settings, shared_data: Path, tmp_path: Path) -> None:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(RULES))
    settings = settings.model_copy(update={"rules_path": rules_path, "batch_max_events": 50})
    feed = load_feed(epa_by_date(shared_data, tmp_path))
    events = [e for e in FileSource(feed).run() if isinstance(e, Envelope)]
    reference = RuleEngine.from_ruleset(load_ruleset(rules_path))
    expected = {a.id for start in range(0, len(events), 500)
                for a in reference.evaluate(events[start:start + 500])}
    assert len(expected) > 100

    bootstrap = settings.kafka_bootstrap or ""
    topics = settings.topics
    parts = split_csv(feed.path, [4000, 7000])
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(topics.all, settings.topic_partitions)
        worker = WorkerProcess(settings, bootstrap, tmp_path / "worker.log").start()
        produce(FileSource(feed, path=parts[0]), bootstrap, topics)
        wait_until_drained(admin, settings, alive=worker.alive)
        produce(FileSource(feed, path=parts[1]), bootstrap, topics)
        worker.kill()  # mid-stream: windows open, offsets and state partly written
        produce(FileSource(feed, path=parts[2]), bootstrap, topics)
        with WorkerProcess(settings, bootstrap, tmp_path / "worker2.log") as restarted:
            wait_until_drained(admin, settings, alive=restarted.alive)
    store = IncidentStore(settings.database_url)
    with store.engine.connect() as conn:
        got = set(conn.execute(select(AlertRow.id)).scalars())
    store.close()
    assert got == expected


def test_replaying_the_whole_file_again_changes_no_alert_value_or_incident(
        settings: Settings, shared_data: Path, tmp_path: Path) -> None:
    """The EPA 2022 file through the worker, then the whole file again (new raw offsets,
    same envelope ids, as `connect --from-start` does): every stored alert (id and
    values) and incident equals one pass."""
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(RULES))
    settings = settings.model_copy(update={"rules_path": rules_path})
    feed = load_feed(epa_by_date(shared_data, tmp_path))
    bootstrap = settings.kafka_bootstrap or ""
    store = IncidentStore(settings.database_url)

    def snapshot() -> tuple[dict, dict]:
        with store.engine.connect() as conn:
            alerts = {r.id: (r.message, r.source_event_ids)
                      for r in conn.execute(select(AlertRow)).all()}
            incidents = {r.id: (r.alert_count, r.severity)
                         for r in conn.execute(select(IncidentRow)).all()}
        return alerts, incidents

    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all, settings.topic_partitions)
        with WorkerProcess(settings, bootstrap, tmp_path / "worker.log") as worker:
            produce(FileSource(feed), bootstrap, settings.topics)
            wait_until_drained(admin, settings, alive=worker.alive)
            once = snapshot()
            produce(FileSource(feed), bootstrap, settings.topics)  # from the start again
            wait_until_drained(admin, settings, alive=worker.alive)
            twice = snapshot()
    store.close()
    assert len(once[0]) > 100
    assert twice == once
