"""Self-contained rule-set versions: a version carries its zone files in the store, so a
worker anywhere loads it after the files are gone; a version that cannot load never
replaces the running one and never makes a worker crash-loop."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from backends import ON_POSTGRESQL
from data_helpers import pm25_borough_rules, split_csv
from shapely.geometry import Point, shape
from sqlalchemy import insert, select

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.runner import produce
from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import DEMO_DIR, Settings
from citywatch.ops.store.rulesets import RuleSetBook, UnloadableRuleSet
from citywatch.ops.store.schema import AlertRow, RuleSetRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.rules.loader import load_ruleset
from citywatch.streams.envelope import Envelope
from citywatch.streams.kafka_admin import KafkaAdmin

ZONES = DEMO_DIR / "zones/new-york-city-boroughs.geojson"
RULE_ID = "pm25-above-12-nyc"


def authored(folder: Path, threshold: float = 12.0) -> Path:
    """A rule file with its own copy of the borough zones, as an analyst writes it."""
    return pm25_borough_rules(folder, threshold, rule_id=RULE_ID)


def expected_alerts(events: list[Envelope], threshold: float) -> int:
    """Events over the threshold inside a borough, by Shapely over the original file."""
    boroughs = [shape(f["geometry"]).buffer(0)
                for f in json.loads(ZONES.read_text())["features"]]
    return sum(1 for e in events if e.attributes.get("pm25") is not None
               and e.attributes["pm25"] > threshold and e.point is not None
               and any(b.covers(Point(*e.point)) for b in boroughs))


def test_a_version_loads_from_the_store_after_its_files_are_gone(store: IncidentStore,
                                                               tmp_path: Path) -> None:
    from citywatch.forecasts.grid import ForecastBook
    from citywatch.ops.worker import StoreRuleSource
    from citywatch.streams.rule_state import ChangelogState

    path = authored(tmp_path / "authoring")
    _, version = RuleSetBook(store).apply(path, actor="ana")
    assert version == load_ruleset(path).version
    shutil.rmtree(tmp_path / "authoring")
    source = StoreRuleSource(RuleSetBook(store), DEMO_DIR / "rules.yaml", ForecastBook(),
                             cache_dir=tmp_path / "elsewhere")
    engine = source.load(ChangelogState())
    assert engine.version == version and source.problem is None
    feed = load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")
    events = [e for e in FileSource(feed).run() if isinstance(e, Envelope)]
    alerts = engine.evaluate(events)
    assert len(alerts) == expected_alerts(events, 12.0) > 0


def test_apply_refuses_a_version_whose_layer_does_not_load(store: IncidentStore,
                                                           tmp_path: Path) -> None:
    path = authored(tmp_path / "authoring")
    (tmp_path / "authoring/boroughs.geojson").write_text('{"type": "Feature')
    with pytest.raises(UnloadableRuleSet, match="boroughs"):
        RuleSetBook(store).apply(path, actor="ana")
    assert RuleSetBook(store).current() is None


def _wait_for(log: Path, text: str, worker: WorkerProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert worker.alive(), log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"never logged {text!r}"
        time.sleep(0.2)


@ON_POSTGRESQL
def test_workers_elsewhere_run_it_and_never_take_a_version_that_cannot_load(
        settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"rules_poll_seconds": 0.5})
    store = IncidentStore(settings.database_url)
    store.create_schema()
    good = authored(tmp_path / "authoring")
    _, version = RuleSetBook(store).apply(good, actor="ana")
    rule_version = load_ruleset(good).rules[0].version
    shutil.rmtree(tmp_path / "authoring")  # the zone file is gone from disk
    feed = load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")
    events = [e for e in FileSource(feed).run() if isinstance(e, Envelope)]
    data = tmp_path / "epa.csv"
    shutil.copy(feed.path, data)
    first, second = (FileSource(feed, path=part) for part in split_csv(data, [3000]))
    bootstrap = settings.kafka_bootstrap or ""
    log = tmp_path / "worker.log"
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all)
        with WorkerProcess(settings, bootstrap, log) as worker:
            produce(first, bootstrap, settings.topics)
            wait_until_drained(admin, settings, alive=worker.alive)
            # a version applied the old way: its zone paths point at a folder that is gone
            with store.engine.begin() as conn:
                conn.execute(insert(RuleSetRow).values(
                    version="unloadable01", content=(DEMO_DIR / "rules.yaml").read_text(),
                    base_dir=str(tmp_path / "gone"), applied_by="bob",
                    applied_at=datetime.now(UTC), layers=None))
            _wait_for(log, "rule set unloadable01 (applied by bob) cannot load here", worker)
            time.sleep(3)  # several more polls: still one line, no traceback
            produce(second, bootstrap, settings.topics)
            wait_until_drained(admin, settings, alive=worker.alive)
        text = log.read_text()
        assert text.count("cannot load here") == 1 and "Traceback" not in text
        log.write_text("")
        with WorkerProcess(settings, bootstrap, log) as restarted:
            _wait_for(log, f"running rule set {version}: the version in force, "
                           "unloadable01, cannot load here", restarted)
            time.sleep(2)
            assert restarted.alive()
    with store.engine.connect() as conn:
        stored = conn.execute(select(AlertRow.rule_version, AlertRow.zone_name)
                              .where(AlertRow.rule_id == RULE_ID)).all()
    assert {row.rule_version for row in stored} == {rule_version}
    assert len(stored) == expected_alerts(events, 12.0)
    assert {row.zone_name for row in stored} <= {"Bronx", "Brooklyn", "Manhattan", "Queens",
                                                "Staten Island"}
    store.close()
