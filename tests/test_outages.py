"""Outages through a TCP fault proxy between citywatch and the real servers: the
incident store (PostgreSQL) and the broker (the embedded Tansu) go away for 30 s while
data flows; nothing is lost, nothing doubled, no process needs a restart."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import PG_URL, _reset_postgres
from data_helpers import STATEFUL_RULES, epa_by_date, split_csv
from fault_proxy import FaultProxy
from sqlalchemy import select
from sqlalchemy.engine import make_url

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.runner import produce
from citywatch.ops.progress import stage_lags, wait_until_drained
from citywatch.ops.settings import Settings
from citywatch.ops.store.schema import AlertRow, IncidentRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import load_ruleset
from citywatch.streams.broker import EmbeddedBroker, free_port
from citywatch.streams.broker_watch import EXIT_BROKER_LOST
from citywatch.streams.envelope import Envelope
from citywatch.streams.kafka_admin import KafkaAdmin

OUTAGE_SECONDS = 30


def stored(url: str) -> tuple[set[str], dict[str, tuple]]:
    store = IncidentStore(url)
    with store.engine.connect() as conn:
        alerts = set(conn.execute(select(AlertRow.id)).scalars())
        incidents = {r.id: (r.alert_count, r.severity, r.first_seen, r.last_seen)
                     for r in conn.execute(select(IncidentRow)).all()}
    store.close()
    return alerts, incidents


@pytest.mark.skipif(not PG_URL, reason="CITYWATCH_TEST_DATABASE_URL not set")
def test_postgresql_away_30s_mid_stream_loses_and_doubles_nothing(
        broker: str, shared_data: Path, tmp_path: Path) -> None:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(STATEFUL_RULES))
    feed = load_feed(epa_by_date(shared_data, tmp_path))

    # the uninterrupted reference: the rules offline, the alerts into a fresh store
    events = [e for e in FileSource(feed).run() if isinstance(e, Envelope)]
    engine = RuleEngine.from_ruleset(load_ruleset(rules_path))
    reference_url = f"sqlite:///{tmp_path / 'reference.db'}"
    reference = IncidentStore(reference_url)
    reference.create_schema()
    for start in range(0, len(events), 500):
        reference.add_alerts(engine.evaluate(events[start:start + 500]))
    reference.close()
    expected_alerts, expected_incidents = stored(reference_url)
    assert len(expected_alerts) > 100

    assert PG_URL is not None
    _reset_postgres(PG_URL)
    with FaultProxy("127.0.0.1", make_url(PG_URL).port or 5432) as proxy:
        proxied = make_url(PG_URL).set(port=proxy.port).render_as_string(hide_password=False)
        settings = Settings(kafka_bootstrap=broker, topic_prefix="pgout.", app_id="cw-pgout",
                            database_url=proxied, data_dir=tmp_path / "state",
                            rules_path=rules_path)
        parts = split_csv(feed.path, [4000, 7000])
        log = tmp_path / "worker.log"
        with KafkaAdmin(broker) as admin:
            admin.ensure_topics(settings.topics.all, settings.topic_partitions)
            with WorkerProcess(settings, broker, log) as worker:
                produce(FileSource(feed, path=parts[0]), broker, settings.topics)
                wait_until_drained(admin, settings, alive=worker.alive)
                produce(FileSource(feed, path=parts[1]), broker, settings.topics)
                proxy.cut()  # mid-stream: the store stage is writing the second part
                produce(FileSource(feed, path=parts[2]), broker, settings.topics)
                down_until = time.monotonic() + OUTAGE_SECONDS
                while time.monotonic() < down_until:
                    assert worker.alive(), worker.log_tail()
                    time.sleep(1)
                proxy.restore()
                wait_until_drained(admin, settings, alive=worker.alive)
                assert worker.alive()
    text = log.read_text()
    assert "incident store unavailable" in text
    assert proxy.refused > 0
    alerts, incidents = stored(PG_URL)
    assert alerts == expected_alerts  # 0 lost, 0 extra (ids are unique keys: 0 doubled)
    assert incidents == expected_incidents


def _processed(admin: KafkaAdmin, settings: Settings) -> tuple[int, int]:
    """(raw messages on the broker, events messages the rules stage has committed)."""
    topics = settings.topics
    raw = sum(admin.end_offsets(topics.raw_all).values())
    done = sum(offset for tp, offset in admin.committed(settings.app_id).items()
               if tp.topic == topics.events)
    return raw, done


def _said(log: Path) -> str:
    """The end of a process's log, for an assertion message."""
    return "the connector exited: " + log.read_text(errors="replace")[-3000:]


def _wait_for(check: Callable[[], bool], within: float, what: str,
              explain: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {within:.0f} s: {what}; {explain()}")


@pytest.mark.parametrize("restart", [False, True], ids=["away", "restarted-empty"])
def test_broker_away_30s_worker_and_connector_carry_on(
        shared_data: Path, tmp_path: Path, restart: bool) -> None:
    """The embedded broker behind a fault proxy (it advertises the proxy's address, so
    every client connection goes through it); a paced connector and a worker run; the
    proxy drops every connection and refuses new ones for 30 s.

    away: the broker keeps its data (a network cut, or a broker with storage restarting):
    both processes stay up and carry on with new data within 30 s of its return.
    restarted-empty: the memory-only broker is restarted meanwhile, so its data is gone:
    the worker says so and exits with status 75 instead of hanging, and a restarted
    worker (as its supervisor would start it) either runs or says in one line why it
    cannot; the connector never stops. (Not asserted: that the restarted worker
    processes the new data. The old worker's in-flight batches reach the new broker
    before it can notice, and Tansu 0.6 auto-creates their topics with its default of
    4 partitions whatever the client asks (the restarted worker then refuses to start:
    exit 2, "topic ... has 4 partition(s), 1 configured"), and cannot serve the records
    those retried batches wrote: it acknowledges 5 records, reports a high watermark of
    1 and returns none (the restarted worker then exits 75, naming the changelog).)"""
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(STATEFUL_RULES))
    feed_path = epa_by_date(shared_data, tmp_path, speed=100_000)  # a year in ~5 min
    port = free_port()
    with FaultProxy("127.0.0.1", port) as proxy, contextlib.ExitStack() as stack:
        broker = stack.enter_context(EmbeddedBroker(port, tmp_path / "broker.log",
                                                    advertised_port=proxy.port))
        bootstrap = proxy.address
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix="kout.",
                            app_id="cw-kout", data_dir=tmp_path / "state",
                            database_url=f"sqlite:///{tmp_path / 'incidents.db'}",
                            rules_path=rules_path)
        env = {**os.environ, **settings.to_env()}
        with KafkaAdmin(bootstrap) as admin:
            admin.ensure_topics(settings.topics.all, settings.topic_partitions)
        connector_log = stack.enter_context((tmp_path / "connector.log").open("wb"))
        connector = subprocess.Popen(
            [sys.executable, "-m", "citywatch.ops.cli", "connect", "file", "--config",
             str(feed_path)], env=env, stdout=connector_log, stderr=subprocess.STDOUT)
        stack.callback(connector.wait, 10)
        stack.callback(connector.terminate)
        worker = stack.enter_context(
            WorkerProcess(settings, bootstrap, tmp_path / "worker.log"))
        with KafkaAdmin(bootstrap) as admin:
            _wait_for(lambda: _processed(admin, settings)[1] > 0, 120,
                      "the worker processes the first events")
        proxy.cut()
        if restart:
            broker.stop()
            broker.start_process()
        down_until = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < down_until:
            assert worker.alive(), worker.log_tail()
            assert connector.poll() is None, _said(tmp_path / "connector.log")
            time.sleep(1)
        proxy.restore()
        if restart:
            broker.wait_ready()
            _wait_for(lambda: not worker.alive(), 60, "the worker notices the lost data")
            assert worker.stop() == EXIT_BROKER_LOST
            assert "the broker lost its data" in worker.log_path.read_text()
            worker = stack.enter_context(
                WorkerProcess(settings, bootstrap, tmp_path / "worker2.log"))
            time.sleep(10)
            if not worker.alive():  # never a hang or a traceback: a reason and a status
                code = worker.stop()
                said = worker.log_path.read_text()
                assert (code == EXIT_BROKER_LOST and "lost its data" in said) or (
                    code == 2 and "partition(s), 1 configured" in said), said[-2000:]
            assert connector.poll() is None, _said(tmp_path / "connector.log")
            return
        with KafkaAdmin(bootstrap) as admin:
            raw, done = _processed(admin, settings)
            _wait_for(lambda: _processed(admin, settings)[0] > raw, OUTAGE_SECONDS,
                      "the connector produces again")
            _wait_for(lambda: _processed(admin, settings)[1] > done, OUTAGE_SECONDS,
                      "the worker processes new events",
                      lambda: f"{stage_lags(admin, settings)} {worker.log_tail()}")
        assert worker.alive(), worker.log_tail()
        assert connector.poll() is None, _said(tmp_path / "connector.log")
