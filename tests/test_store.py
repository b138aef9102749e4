"""Incident store: idempotent upserts and incident grouping, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from factories import make_alert
from sqlalchemy import select

from citywatch.ops.store.schema import AlertRow, IncidentRow
from citywatch.ops.store.store import IncidentStore


def test_replaying_alerts_adds_nothing(store: IncidentStore) -> None:
    alerts = [make_alert(i) for i in range(50)]
    assert store.add_alerts(alerts) == 50
    assert store.add_alerts(alerts) == 0
    assert store.add_alerts(alerts[:10] + alerts[:10]) == 0
    counts = store.counts()
    assert counts["alerts_total"] == 50
    assert counts["incidents"] == 1
    with store.engine.connect() as conn:
        assert conn.scalar(select(IncidentRow.alert_count)) == 50


def test_incident_takes_worst_severity_and_time_span(store: IncidentStore) -> None:
    store.add_alerts([make_alert(1, hours=1)])
    store.add_alerts([make_alert(2, severity="Severe", hours=3), make_alert(3, hours=0)])
    with store.engine.connect() as conn:
        incident = conn.execute(select(IncidentRow)).one()
        alerts = conn.execute(select(AlertRow.event_time)).scalars().all()
    assert incident.severity == "Severe" and incident.alert_count == 3
    assert incident.first_seen == datetime(2022, 1, 5, 12, tzinfo=UTC)
    assert incident.last_seen == datetime(2022, 1, 5, 15, tzinfo=UTC)
    assert all(t.tzinfo is not None for t in alerts)


def test_incidents_split_by_zone_rule_and_window(store: IncidentStore) -> None:
    store.add_alerts([make_alert(1, zone="Bronx"), make_alert(2, zone="Queens"),
                      make_alert(3, zone=None), make_alert(4, rule="other"),
                      make_alert(5, hours=48)])
    assert store.counts()["incidents"] == 5


def test_lineage_is_stored(store: IncidentStore) -> None:
    alert = make_alert(7)
    store.add_alerts([alert])
    with store.engine.connect() as conn:
        row = conn.execute(select(AlertRow).where(AlertRow.id == alert.id)).one()
    assert (row.rule_id, row.rule_version, row.source_event_ids) == ("pm25-high", "v1",
                                                                     ["ev-7"])


def test_two_writers_upsert_the_same_alerts_once(store: IncidentStore) -> None:
    """Two workers delivering the same 1,000 alerts at once store exactly 1,000 rows."""
    alerts = [make_alert(i, zone=f"zone-{i % 7}") for i in range(1000)]
    stores = [IncidentStore(store.url) for _ in range(2)]
    barrier = threading.Barrier(2)
    inserted: list[int] = []

    def write(target: IncidentStore) -> None:
        barrier.wait()
        inserted.append(sum(target.add_alerts(alerts[i:i + 100])
                            for i in range(0, len(alerts), 100)))

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in stores:
        s.close()
    counts = store.counts()
    assert counts["alerts_total"] == 1000
    assert sum(inserted) == 1000
    with store.engine.connect() as conn:
        assert sum(conn.scalars(select(IncidentRow.alert_count))) == 1000


def test_incidents_equal_a_recount_of_their_alerts_after_many_batches(
        store: IncidentStore) -> None:
    """Incidents are updated from the alerts each batch adds (not recounted): after
    batches that repeat earlier alerts, mix severities and reach back in time, every
    incident's count, time span and worst severity equal a pandas recount of the
    alerts table."""
    import random

    import pandas as pd

    from citywatch.ops.store.store import SEVERITY_RANK

    chance = random.Random(7)
    severities = list(SEVERITY_RANK)
    pool = [make_alert(n, zone=f"zone-{n % 5}", hours=chance.randrange(0, 30),
                       severity=chance.choice(severities)) for n in range(400)]
    written: list = []
    for _ in range(25):
        batch = chance.sample(pool, 40) + chance.sample(written, min(10, len(written)))
        store.add_alerts(batch)
        written += batch
    with store.engine.connect() as conn:
        alerts = pd.DataFrame(conn.execute(select(
            AlertRow.incident_id, AlertRow.event_time, AlertRow.severity)).all())
        incidents = pd.DataFrame(conn.execute(select(
            IncidentRow.id, IncidentRow.alert_count, IncidentRow.first_seen,
            IncidentRow.last_seen, IncidentRow.severity)).all()).set_index("id")
    assert len(alerts) == len({a.id for a in written})
    alerts["rank"] = alerts["severity"].map(SEVERITY_RANK)
    recount = alerts.groupby("incident_id").agg(
        count=("rank", "size"), first=("event_time", "min"), last=("event_time", "max"),
        worst=("rank", "max"))
    names = {rank: name for name, rank in SEVERITY_RANK.items()}
    assert len(recount) == len(incidents) > 5
    for iid, row in recount.iterrows():
        stored = incidents.loc[iid]
        assert stored["alert_count"] == row["count"]
        assert stored["first_seen"] == row["first"] and stored["last_seen"] == row["last"]
        assert stored["severity"] == names[row["worst"]]
