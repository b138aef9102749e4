"""Rule governance end to end: `rules apply` hot-reloads a running worker (no restart),
alerts carry the new rule version, and the audit log records who changed what."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml
from backends import ON_POSTGRESQL
from sqlalchemy import select

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.runner import produce
from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import DEMO_DIR, Settings
from citywatch.ops.store.schema import AlertRow, AuditRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.rules.loader import load_ruleset
from citywatch.streams.kafka_admin import KafkaAdmin


def _split_i94(tmp_path: Path) -> tuple[Path, Path]:
    lines = (DEMO_DIR / "data/i94_traffic_2018_tail.csv").read_text().splitlines(True)
    feeds = []
    for part, body in (("a", lines[1:1000]), ("b", lines[1000:])):
        data = tmp_path / f"i94-{part}.csv"
        data.write_text(lines[0] + "".join(body))
        feed = yaml.safe_load((DEMO_DIR / "feeds/i94_traffic.yaml").read_text())
        feed["path"] = str(data)
        config = tmp_path / f"i94-{part}.yaml"
        config.write_text(yaml.safe_dump(feed))
        feeds.append(config)
    return feeds[0], feeds[1]


@ON_POSTGRESQL
def test_apply_hot_reloads_a_running_worker(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"rules_poll_seconds": 0.5})
    first, second = _split_i94(tmp_path)
    stricter = yaml.safe_load((DEMO_DIR / "rules.yaml").read_text())
    for rule in stricter["rules"]:
        if rule["id"] == "i94-heavy-volume":
            rule["condition"]["value"] = 6000
    stricter["zones"] = [{**z, "path": str(DEMO_DIR / z["path"])} for z in stricter["zones"]]
    new_rules = tmp_path / "rules.yaml"
    new_rules.write_text(yaml.safe_dump(stricter))
    old_version = load_ruleset(settings.rules_path).rules[2].version
    new_version = load_ruleset(new_rules).rules[2].version
    assert old_version != new_version

    bootstrap = settings.kafka_bootstrap or ""
    store = IncidentStore(settings.database_url)
    store.create_schema()
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all)
        with WorkerProcess(settings, bootstrap, tmp_path / "worker.log") as worker:
            produce(FileSource(load_feed(first)), bootstrap, settings.topics)
            wait_until_drained(admin, settings, alive=worker.alive)
            applied = subprocess.run(
                [sys.executable, "-m", "citywatch.ops.cli", "rules", "apply", str(new_rules),
                 "--actor", "ana"], capture_output=True, text=True,
                env={**os.environ, **settings.to_env()}, timeout=120)
            assert applied.returncode == 0, applied.stderr
            deadline = time.monotonic() + 60
            while "rules reloaded" not in (tmp_path / "worker.log").read_text():
                assert time.monotonic() < deadline and worker.alive()
                time.sleep(0.2)
            produce(FileSource(load_feed(second)), bootstrap, settings.topics)
            wait_until_drained(admin, settings, alive=worker.alive)

    with store.engine.connect() as conn:
        rows = conn.execute(select(AlertRow.rule_version, AlertRow.attributes)
                            .where(AlertRow.rule_id == "i94-heavy-volume")).all()
        trail = conn.execute(select(AuditRow).where(AuditRow.entity_type == "rule_set")).all()
    versions = {r.rule_version for r in rows}
    assert versions == {old_version, new_version}
    assert all(r.attributes["volume"] >= 6000 for r in rows if r.rule_version == new_version)
    assert any(6000 <= r.attributes["volume"] < 6500 for r in rows
               if r.rule_version == new_version)  # the new threshold took effect
    (entry,) = trail
    assert entry.actor == "ana" and entry.detail["to"] == load_ruleset(new_rules).version
    assert entry.detail["rules"]["i94-heavy-volume"] == new_version
    store.close()


def test_apply_refuses_an_invalid_file(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: x\n    domain: traffic\n")
    result = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "rules", "apply",
                             str(bad)], capture_output=True, text=True,
                            env={**os.environ, **settings.to_env()}, timeout=120)
    assert result.returncode == 1
    assert f"{bad}:2:" in result.stderr


def test_rules_test_prints_alerts(tmp_path: Path) -> None:
    events = [e for e in FileSource(load_feed(DEMO_DIR / "feeds/i94_traffic.yaml")).run()]
    jsonl = tmp_path / "events.jsonl"
    from citywatch.streams.envelope import encode_envelope

    jsonl.write_bytes(b"\n".join(encode_envelope(e) for e in events) + b"\n")
    result = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "rules", "test",
                             str(DEMO_DIR / "rules.yaml"), "--events", str(jsonl)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    heavy = [a for a in alerts if a["rule_id"] == "i94-heavy-volume"]
    assert len(heavy) == sum(e.attributes["volume"] >= 6500 for e in events)
    assert {a["rule_id"] for a in alerts} == {"i94-heavy-volume", "i94-sudden-drop",
                                              "i94-congestion-persisting"}
