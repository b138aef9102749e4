"""Zone-keyed state over any number of partitions and workers: a zone window, a
correlation and entity rules over the real EPA 2022 file give the same alert ids with
1 worker × 1 partition, 1 × 4, 2 × 4, and 2 × 4 with one worker SIGKILLed and restarted
mid-stream, and those ids equal one in-process evaluation of the whole file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from backends import ON_POSTGRESQL
from data_helpers import STATEFUL_RULES, epa_by_date, split_csv
from sqlalchemy import select

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.runner import produce
from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import Settings
from citywatch.ops.store.schema import AlertRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import load_ruleset
from citywatch.streams.envelope import Envelope
from citywatch.streams.kafka_admin import KafkaAdmin

# the stateful EPA rules (a zone window, absence, persistence) and a correlation whose
# second side counts for every borough within 5 km: rows near a boundary go to the
# partitions of several zones
RULES = {**STATEFUL_RULES, "rules": [*STATEFUL_RULES["rules"], {
    "id": "pm25-pair", "domain": "environment",
    "condition": {"type": "correlate", "layer": "nyc", "within": "1d",
                  "first": {"domain": "environment", "condition": {
                      "type": "threshold", "attribute": "pm25", "op": ">", "value": 20}},
                  "second": {"domain": "environment", "near_m": 5000, "condition": {
                      "type": "threshold", "attribute": "pm25", "op": ">", "value": 25}}},
    "alert": {"severity": "Minor", "category": "Env", "message": "{zone}"}}]}


@ON_POSTGRESQL
@pytest.mark.parametrize(("partitions", "workers", "kill"), [
    (1, 1, False), (4, 1, False), (4, 2, False), (4, 2, True)],
    ids=["1x1", "1x4", "2x4", "2x4-sigkill"])
def test_same_alert_ids_over_partitions_and_workers(
        settings: Settings, shared_data: Path, tmp_path: Path, partitions: int,
        workers: int, kill: bool) -> None:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(RULES))
    settings = settings.model_copy(update={
        "rules_path": rules_path, "batch_max_events": 100, "topic_partitions": partitions})
    feed = load_feed(epa_by_date(shared_data, tmp_path))
    events = [e for e in FileSource(feed).run() if isinstance(e, Envelope)]
    reference = RuleEngine.from_ruleset(load_ruleset(rules_path))
    expected = {a.id: a.rule_id for start in range(0, len(events), 500)
                for a in reference.evaluate(events[start:start + 500])}
    per_rule = {r: sum(1 for v in expected.values() if v == r) for r in set(expected.values())}
    assert per_rule["pm25-week-borough"] > 20 and per_rule["pm25-pair"] > 20
    assert per_rule["pm25-persisting"] > 20

    bootstrap = settings.kafka_bootstrap or ""
    parts = split_csv(feed.path, [3000, 6000])
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all, partitions)
        running = [WorkerProcess(settings, bootstrap, tmp_path / f"worker{n}.log").start()
                   for n in range(workers)]

        def alive() -> bool:
            return all(w.alive() for w in running)
        try:
            produce(FileSource(feed, path=parts[0]), bootstrap, settings.topics)
            wait_until_drained(admin, settings, alive=alive)
            produce(FileSource(feed, path=parts[1]), bootstrap, settings.topics)
            if kill:  # mid-stream: windows open, state and offsets partly written
                running[1].kill()
                running[1] = WorkerProcess(settings, bootstrap,
                                           tmp_path / "worker1-again.log").start()
            produce(FileSource(feed, path=parts[2]), bootstrap, settings.topics)
            wait_until_drained(admin, settings, alive=alive)
        finally:
            for worker in running:
                worker.stop()
    store = IncidentStore(settings.database_url)
    with store.engine.connect() as conn:
        got = dict(conn.execute(select(AlertRow.id, AlertRow.rule_id)).all())
    store.close()
    extra = sorted(got[i] for i in set(got) - set(expected))
    missing = sorted(expected[i] for i in set(expected) - set(got))
    assert (extra, missing) == ([], [])


@ON_POSTGRESQL
def test_worker_refuses_a_changelog_partitioned_unlike_its_events(settings: Settings) -> None:
    """events with 4 partitions and the zone-state changelog with 2 (made before, by
    hand): the worker exits 2 with one line naming the topic, before it reads anything."""
    bootstrap = settings.kafka_bootstrap or ""
    topics = settings.topics
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics([t for t in topics.all if t != topics.rule_state_keyed], 4)
        admin.ensure_topics([topics.rule_state_keyed], 2)
    env = {**os.environ, **settings.to_env(), "CITYWATCH_KAFKA_BOOTSTRAP": bootstrap,
           "CITYWATCH_TOPIC_PARTITIONS": "4"}
    done = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "worker"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"topic {topics.rule_state_keyed} has 2 partition(s), 4 " \
        "configured" in lines[0], done.stderr
