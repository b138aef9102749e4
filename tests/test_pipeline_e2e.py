"""End to end on the real embedded broker and real data: connectors → Kafka → Faust
worker → incident store, and dead-lettering of malformed rows."""

from __future__ import annotations

import re
from pathlib import Path

from backends import ON_POSTGRESQL
from data_helpers import malformed_epa
from kafka_helpers import read_topic
from sqlalchemy import func, select

from citywatch.ops.cap import CapWriter
from citywatch.ops.demo import run_demo
from citywatch.ops.explain import explain_alert
from citywatch.ops.settings import Settings
from citywatch.ops.store.schema import AlertRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.subscriptions import SubscriptionBook
from citywatch.rules.engine import build_zone_index
from citywatch.rules.loader import load_ruleset
from citywatch.streams.alert import decode_alert
from citywatch.streams.deadletter import decode_deadletter
from citywatch.streams.envelope import DOMAINS
from citywatch.streams.subscriptions import SubscriptionIn


def test_demo_alerts_in_every_domain_and_replay_is_idempotent(settings: Settings) -> None:
    store = IncidentStore(settings.database_url)
    store.create_schema()
    SubscriptionBook(store).create(SubscriptionIn(team="health", categories=["Health"],
                                                  min_severity="Moderate"), actor="test")
    seen: list[dict] = []
    first = run_demo(settings, on_progress=seen.append)
    assert seen[-1]["events_by_domain"] == first["events_by_domain"]  # live progress
    assert {"ingest", "rules", "store", "deliveries"} <= set(seen[-1]["lag"])
    assert max(s["lag"].get("ingest", 0) for s in seen) > 0
    for domain in DOMAINS:
        assert first["events_by_domain"][domain] > 0, domain
        assert first["alerts_by_domain"][domain] > 0, domain
    assert first["dead_letters"] == 0
    assert first["first_alert_seconds"] is not None
    # every alert emitted for a distinct source event is stored: emitted minus the same
    # alert raised again (a repeated source record) == newly stored == all stored
    assert first["alerts_conflicting"] == 0
    assert (first["alerts_emitted"] - first["alerts_repeated"] == first["alerts_new"]
            == first["alerts_total"] > 0)

    second = run_demo(settings)
    assert second["alerts_total"] == first["alerts_total"] and second["alerts_new"] == 0
    assert second["incidents"] == first["incidents"]
    # stateless rules re-raised every alert (same deterministic ids) and the store kept one
    # of each; stateful rules saw the replayed events as already behind their state
    with store.engine.connect() as conn:
        by_rule = dict(conn.execute(select(AlertRow.rule_id, func.count())
                                    .group_by(AlertRow.rule_id)).all())
    stateless = {r.id for r in load_ruleset(settings.rules_path).rules if not r.stateful}
    assert second["alerts_emitted"] >= sum(n for r, n in by_rule.items() if r in stateless)
    assert set(by_rule) - stateless  # the demo has stateful rules, and they alerted

    with store.engine.connect() as conn:
        rows = conn.execute(select(AlertRow)).all()
    # the health team's topic carries exactly the stored Health alerts (maybe redelivered)
    team = {decode_alert(v).id for v in read_topic(settings.kafka_bootstrap or "",
                                                     settings.topics.team("health"))}
    assert team == {r.id for r in rows if r.category == "Health"} != set()
    # every alert the demo produced exports as CAP 1.2 that validates against cap12.xsd
    ruleset = load_ruleset(settings.rules_path)
    writer = CapWriter(settings.cap_sender, build_zone_index(ruleset))
    for row in rows:
        writer.alert(row)  # raises CapValidationError if invalid
    assert len(rows) == first["alerts_total"]
    # `citywatch explain` answers for every alert: the rule text at its version, the
    # source records' file:line (or feature) and the raw topic position, compared values
    for row in rows:
        explained = explain_alert(store, row.id, configured=settings.rules_path)
        assert explained is not None and explained["rule"].get("text"), row.id
        assert explained["compared"], row.id
        sourced = [s["origin"] for s in explained["sources"] if s["origin"]]
        assert sourced, (row.rule_id, explained["sources"])
        assert all(re.search(r"(\.csv:\d+|\.geojson#features\[\d+\]) \S*raw\.\w+/\d+@\d+$",
                             o) for o in sourced), sourced
    store.close()


@ON_POSTGRESQL
def test_malformed_rows_go_to_deadletter_with_reason_and_line(
        settings: Settings, shared_data: Path, tmp_path: Path) -> None:
    config, bad_lines = malformed_epa(shared_data, tmp_path)
    summary = run_demo(settings, feeds=[config])
    assert summary["events_by_domain"]["environment"] == 37
    assert summary["dead_letters"] == 3

    letters = [decode_deadletter(v)
               for v in read_topic(settings.kafka_bootstrap or "", settings.topics.deadletter)]
    by_line = {int(d.locator.rsplit(":", 1)[1]): d for d in letters}
    assert set(by_line) == set(bad_lines)
    for line, field in bad_lines.items():
        letter = by_line[line]
        assert letter.field == field and letter.error, letter
        assert letter.locator == f"epa_bad.csv:{line}"
        assert letter.raw  # the original record travels with the reason
    assert "not a valid float" in by_line[6].error
    assert "missing coordinates" in by_line[11].error
    assert "not a time" in by_line[21].error
    # every valid row reached the rules stage: the events topic holds all 37 envelopes
    from citywatch.streams.batch import decode_batch
    frames = read_topic(settings.kafka_bootstrap or "", settings.topics.events)
    assert sum(len(decode_batch(f)) for f in frames) == 37
