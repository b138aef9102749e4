"""Two-person approval of rule changes, history and rollback, through the CLI and the
API; a running worker switches on approval and a rollback restores the earlier version's
alerts on the same events."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

from backends import ON_POSTGRESQL
from data_helpers import pm25_borough_rules, split_csv
from sqlalchemy import select
from typer.testing import CliRunner

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.runner import produce
from citywatch.ops.cli import app
from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import DEMO_DIR, Settings
from citywatch.ops.store.rulesets import RuleSetBook
from citywatch.ops.store.schema import AlertRow, AuditRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.tokens import TokenBook
from citywatch.ops.worker_process import WorkerProcess
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import load_ruleset
from citywatch.streams.envelope import Envelope
from citywatch.streams.kafka_admin import KafkaAdmin

ZONES = DEMO_DIR / "zones/new-york-city-boroughs.geojson"


def rule_file(folder: Path, threshold: float) -> Path:
    return pm25_borough_rules(folder, threshold)


def people(store: IncidentStore) -> dict[str, str]:
    tokens = TokenBook(store)
    return {"ana": tokens.issue("ana", "analyst"), "bob": tokens.issue("bob", "admin"),
            "cy": tokens.issue("cy", "admin"), "vic": tokens.issue("vic", "viewer")}


def cli(settings_env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env=settings_env)
    return result.exit_code, result.output


def test_two_person_flow_history_diff_and_rollback_by_cli(store: IncidentStore,
                                                          tmp_path: Path) -> None:
    env = {"CITYWATCH_DATABASE_URL": store.url}
    token = people(store)
    lenient, strict = rule_file(tmp_path, 12), rule_file(tmp_path, 20)
    code, out = cli(env, "rules", "apply", str(lenient))
    assert code == 3 and "two-person approval is on" in out  # two admins
    code, out = cli(env, "rules", "propose", str(lenient), "--token", token["vic"])
    assert code == 3 and "vic has role 'viewer'" in out
    code, out = cli(env, "rules", "propose", str(lenient), "--token", token["ana"])
    assert code == 0, out
    first = load_ruleset(lenient).version
    assert f"proposed rule set {first} by ana" in out and "+ rule pm25-nyc" in out
    assert cli(env, "rules", "approve", first, "--token", token["ana"])[0] == 3  # analyst
    code, out = cli(env, "rules", "approve", first, "--token", token["bob"])
    assert code == 0 and RuleSetBook(store).current().version == first, out
    assert cli(env, "rules", "approve", first, "--token", token["cy"])[0] == 3  # decided

    second = load_ruleset(strict).version
    code, out = cli(env, "rules", "propose", str(strict), "--token", token["bob"])
    assert code == 0 and "~ rule pm25-nyc: condition" in out, out
    code, out = cli(env, "rules", "approve", second, "--token", token["bob"])
    assert code == 3 and "a different person must decide" in out
    code, out = cli(env, "rules", "approve", second, "--token", token["cy"])
    assert code == 0 and RuleSetBook(store).current().version == second
    code, out = cli(env, "rules", "diff", first, second)
    assert code == 0 and "~ rule pm25-nyc: condition" in out
    assert cli(env, "rules", "approve", "nosuchversion", "--token", token["cy"])[0] == 4
    assert cli(env, "rules", "show", "nosuchversion")[0] == 4

    code, out = cli(env, "rules", "rollback", first, "--token", token["cy"])
    assert code == 0 and RuleSetBook(store).current().version == first, out
    code, out = cli(env, "rules", "history")
    assert out.count(" live ") == 3
    assert f"approved  {second}  proposed by bob, approved by cy" in out
    with store.engine.connect() as conn:
        trail = [(r.actor, r.action, r.entity_id) for r in conn.execute(
            select(AuditRow).where(AuditRow.entity_type == "rule_set")
            .order_by(AuditRow.id))]
    assert trail == [("ana", "propose", first), ("bob", "approve", first),
                     ("bob", "propose", second), ("cy", "approve", second),
                     ("cy", "rollback", first)]


def test_two_person_flow_by_api(store: IncidentStore, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

        from citywatch.ops.api.app import create_api
    token = people(store)
    h = {name: {"Authorization": f"Bearer {t}"} for name, t in token.items()}
    client = TestClient(create_api(Settings(database_url=store.url, data_dir=tmp_path),
                                   store))
    text = rule_file(tmp_path, 12).read_text()
    layers = {"boroughs.geojson": ZONES.read_text()}
    body = {"rules": text, "layers": layers}
    assert client.post("/rules/proposals", json=body).status_code == 401
    assert client.post("/rules/proposals", json=body, headers=h["vic"]).status_code == 403
    created = client.post("/rules/proposals", json=body, headers=h["ana"])
    assert created.status_code == 201, created.text
    version = created.json()["version"]
    assert created.json()["status"] == "proposed"
    assert version == load_ruleset(tmp_path / "rules-12.yaml").version
    approve = f"/rules/versions/{version}/approve"
    assert client.post(approve, headers=h["ana"]).status_code == 403  # analyst
    assert client.post(approve, headers=h["bob"]).json()["status"] == "live"
    assert client.post(approve, headers=h["cy"]).status_code == 409  # already decided
    assert client.get("/rules", headers=h["vic"]).json()["live"] == version
    # a change of threshold only: the zone file comes from the live version
    stricter = client.post("/rules/proposals", headers=h["bob"],
                           json={"rules": text.replace("value: 12", "value: 20")})
    assert stricter.status_code == 201, stricter.text
    other = stricter.json()["version"]
    assert client.post(f"/rules/versions/{other}/approve", headers=h["bob"]
                       ).status_code == 403  # the proposer
    rejected = client.post(f"/rules/versions/{other}/reject", headers=h["cy"],
                           json={"reason": "too strict for winter"})
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["reason"] == "too strict for winter"
    diff = client.get("/rules/diff", params={"old": version, "new": other}, headers=h["vic"])
    assert diff.json()["changed"] == {"pm25-nyc": ["condition"]}
    broken = client.post("/rules/proposals", headers=h["ana"],
                         json={"rules": text.replace("{zone}", "{zon}")})
    assert broken.status_code == 422
    assert "did you mean {zone}" in broken.json()["detail"][0]["msg"]
    assert client.get("/rules/versions/nosuch", headers=h["vic"]).status_code == 404


@ON_POSTGRESQL
def test_approval_switches_a_running_worker_and_rollback_restores_the_alerts(
        settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"rules_poll_seconds": 0.5})
    store = IncidentStore(settings.database_url)
    store.create_schema()
    token = people(store)
    lenient, strict = rule_file(tmp_path / "rules", 12), rule_file(tmp_path / "rules", 20)
    RuleSetBook(store).apply(lenient, actor="setup")
    feed = load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")
    data = tmp_path / "epa.csv"
    shutil.copy(feed.path, data)
    parts = split_csv(data, [1300])
    second_events = [e for e in FileSource(feed, path=parts[1]).run()
                     if isinstance(e, Envelope)]
    env = {**os.environ, **settings.to_env()}
    bootstrap = settings.kafka_bootstrap or ""
    log = tmp_path / "worker.log"

    def run_cli(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", *args],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr

    def switched(version: str) -> float:
        started = time.monotonic()
        while f"-> {version}" not in log.read_text():
            assert worker.alive() and time.monotonic() - started < 60, log.read_text()
            time.sleep(0.05)
        return time.monotonic() - started

    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all)
        with WorkerProcess(settings, bootstrap, log) as worker:
            produce(FileSource(feed, path=parts[0]), bootstrap, settings.topics)
            wait_until_drained(admin, settings, alive=worker.alive)
            strict_version = load_ruleset(strict).version
            run_cli("rules", "propose", str(strict), "--token", token["ana"])
            run_cli("rules", "approve", strict_version, "--token", token["bob"])
            took = switched(strict_version)
            assert took < 2 * settings.rules_poll_seconds + 1.0, took
            produce(FileSource(feed, path=parts[1]), bootstrap, settings.topics)
            wait_until_drained(admin, settings, alive=worker.alive)
            run_cli("rules", "rollback", load_ruleset(lenient).version, "--token",
                    token["cy"])
            switched(load_ruleset(lenient).version)
            produce(FileSource(feed, path=parts[1]), bootstrap, settings.topics)  # again
            wait_until_drained(admin, settings, alive=worker.alive)
    offline = {v: {a.id for a in RuleEngine.from_ruleset(load_ruleset(p)).evaluate(
        second_events)} for v, p in (("lenient", lenient), ("strict", strict))}
    rule_versions = {name: load_ruleset(p).rules[0].version
                     for name, p in (("lenient", lenient), ("strict", strict))}
    second_ids = {e.id for e in second_events}
    with store.engine.connect() as conn:
        rows = conn.execute(select(AlertRow.id, AlertRow.rule_version,
                                   AlertRow.source_event_ids)).all()
    on_second = [r for r in rows if r.source_event_ids[0] in second_ids]
    for name in ("lenient", "strict"):
        stored = {r.id for r in on_second if r.rule_version == rule_versions[name]}
        assert stored == offline[name] and stored, name
    print(f"worker switched {took:.2f} s after approval; "
          f"{len(offline['strict'])} strict and {len(offline['lenient'])} lenient alerts")
    store.close()
