"""Benchmark: sustained batched alert upserts per second into the incident store, on
SQLite (a temporary file) and on PostgreSQL (CITYWATCH_TEST_DATABASE_URL or the local
server), fresh alerts and a full replay of the same alerts (all duplicates).

Usage: python bench/store.py [--alerts 50000] [--batch 500] [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from citywatch.ops.store.schema import Base
from citywatch.ops.store.store import IncidentStore
from citywatch.rules.identity import alert_id, event_key
from citywatch.streams.alert import Alert

ZONES = ["Bronx", "Brooklyn", "Manhattan", "Queens", "Staten Island"]


def alerts(count: int) -> list[Alert]:
    start = datetime(2022, 1, 1, tzinfo=UTC)
    out = []
    for i in range(count):
        when = start + timedelta(minutes=i)
        entity = f"site-{i % 300}"
        out.append(Alert(
            id=alert_id("pm25-high", "v1", event_key(str(i))), rule_id="pm25-high",
            rule_version="v1", domain="environment", kind="air_quality.observed",
            severity="Moderate", urgency="Immediate", certainty="Observed",
            category="Health", event="PM2.5 high", message=f"PM2.5 high at {entity}",
            entity_id=entity, event_time=when, raised_at=when, source_event_ids=[str(i)],
            zone_layer="nyc-boroughs", zone_id=ZONES[i % 5], zone_name=ZONES[i % 5],
            geometry={"type": "Point", "coordinates": [-73.9, 40.8]},
            attributes={"pm25": 25.0}))
    return out


def run(url: str, batch: list[Alert], size: int) -> dict[str, float]:
    store = IncidentStore(url)
    store.create_schema()
    result = {}
    for label in ("fresh", "replay"):
        started = time.perf_counter()
        for i in range(0, len(batch), size):
            store.add_alerts(batch[i:i + size])
        seconds = time.perf_counter() - started
        result[f"{label}_alerts_per_s"] = round(len(batch) / seconds)
    assert store.counts()["alerts_total"] == len(batch)
    store.close()
    return result


def reset_postgres(url: str) -> None:
    store = IncidentStore(url)
    with store.engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--postgres", default=os.environ.get(
        "CITYWATCH_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    batch = alerts(args.alerts)
    report: dict[str, object] = {"alerts": args.alerts, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        report["sqlite"] = run(f"sqlite:///{Path(tmp) / 'bench.db'}", batch, args.batch)
    reset_postgres(args.postgres)
    report["postgresql"] = run(args.postgres, batch, args.batch)
    reset_postgres(args.postgres)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
