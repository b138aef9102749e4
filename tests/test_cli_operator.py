"""The command line as an operator meets it, through the real ``citywatch`` process: one
data directory, the store named first, one-line errors with the documented statuses,
warnings for misspelt settings, and incidents by id prefix with the API's filters."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from factories import make_alert

from citywatch.ops.store.store import IncidentStore

CLEAN = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent-home"}


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citywatch.ops.cli", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env={**CLEAN, **(env or {})}, cwd=cwd)


def test_one_data_directory_named_by_every_store_command(tmp_path: Path) -> None:
    """``--data-dir`` (or CITYWATCH_DATA_DIR) holds the default store, whatever the
    current folder; each command says which store it used; an old ./citywatch.db is
    pointed out, not silently replaced by an empty one."""
    data = tmp_path / "state"
    elsewhere = tmp_path / "somewhere"
    elsewhere.mkdir()
    added = run("--data-dir", str(data), "tokens", "add", "desk", cwd=elsewhere)
    assert added.returncode == 0, added.stderr
    store_line = f"store: sqlite:///{data / 'citywatch.db'}"
    assert added.stderr.splitlines()[0] == store_line
    assert (data / "citywatch.db").is_file() and not (elsewhere / "citywatch.db").exists()
    listed = run("tokens", "list", env={"CITYWATCH_DATA_DIR": str(data)}, cwd=tmp_path)
    assert listed.stderr.splitlines()[0] == store_line and "desk" in listed.stdout
    as_json = run("--data-dir", str(data), "incidents", "list", "--json")
    assert json.loads(as_json.stdout)["store"] == f"sqlite:///{data / 'citywatch.db'}"
    (elsewhere / "citywatch.db").write_bytes(b"")
    noted = run("--data-dir", str(data), "incidents", "list", cwd=elsewhere)
    assert "./citywatch.db is a store from an older citywatch" in noted.stderr


@pytest.mark.parametrize(("args", "env", "status", "words"), [
    (["incidents", "list"], {"CITYWATCH_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"},
     3, "unavailable: the incident store at postgresql://nobody@127.0.0.1:1/x"),
    (["incidents", "list"], {"CITYWATCH_DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/x"},
     3, "postgresql://u:***@127.0.0.1:1/x"),
    (["incidents", "list"], {"CITYWATCH_DATABASE_URL": "not a url"}, 2,
     "configuration error: CITYWATCH_DATABASE_URL=not a url"),
    (["incidents", "list"], {"CITYWATCH_DATABASE_URL": "oracle+nope://x"}, 2,
     "CITYWATCH_DATABASE_URL"),
    (["worker", "--log-level", "info"], {"CITYWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, 3,
     "no Kafka broker answers at 127.0.0.1:1"),
    (["demo"], {"CITYWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, 3,
     "no Kafka broker answers at 127.0.0.1:1"),
    (["connect", "file", "--config", "/no/such/feed.yaml"], {}, 2, "/no/such/feed.yaml"),
    (["incidents", "list"], {"CITYWATCH_TOPIC_PARTITIONS": "0"}, 2,
     "CITYWATCH_TOPIC_PARTITIONS"),
    (["incidents", "list", "--min-severity", "Severe2"], {}, 2,
     "'Extreme', 'Severe', 'Moderate', 'Minor' or 'Unknown'"),
    (["incidents", "list", "--domain", "air"], {}, 2, "'traffic', 'environment'"),
    (["replay", "--from-kafka"], {}, 2, "--from-kafka replays into a sandbox"),
], ids=["db-refused", "db-password-hidden", "db-unparseable", "db-unknown-dialect",
        "kafka-refused", "demo-kafka-refused", "feed-missing", "bad-setting", "bad-severity",
        "bad-domain", "replay-into-itself"])
def test_mistakes_are_one_or_two_lines_with_their_status(
        tmp_path: Path, args: list[str], env: dict[str, str], status: int,
        words: str) -> None:
    started = time.monotonic()
    done = run(*args, env={"CITYWATCH_DATA_DIR": str(tmp_path), **env})
    assert time.monotonic() - started < 30  # checked with short timeouts, not 30 s+
    assert done.returncode == status, done.stderr
    lines = [line for line in done.stderr.splitlines() if not line.startswith("store: ")]
    assert 1 <= len(lines) <= 2, done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = run("--debug", "incidents", "list",
               env={"CITYWATCH_DATA_DIR": str(tmp_path), "CITYWATCH_DATABASE_URL": "nope"})
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_taken_port_is_refused_at_once(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = run("serve", "--port", str(port), env={"CITYWATCH_DATA_DIR": str(tmp_path)},
                   timeout=30)
        metrics = run("worker", "--metrics-port", str(port),
                      env={"CITYWATCH_DATA_DIR": str(tmp_path),
                           "CITYWATCH_KAFKA_BOOTSTRAP": "127.0.0.1:1"}, timeout=30)
    assert done.returncode == 2 and f"127.0.0.1:{port} is already in use" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert metrics.returncode == 2 and "--metrics-port" in metrics.stderr


def test_misspelt_setting_gets_the_closest_name(tmp_path: Path) -> None:
    done = run("incidents", "list", env={"CITYWATCH_DATA_DIR": str(tmp_path),
                                         "CITYWATCH_API_PROT": "8081"})
    assert done.returncode == 0
    assert ("warning: CITYWATCH_API_PROT is not a citywatch setting (ignored); did you "
            "mean CITYWATCH_API_PORT?") in done.stderr


def test_incidents_by_prefix_with_filters_and_summary(store: IncidentStore) -> None:
    """``incidents ack 4ba77de``-style prefixes, the API's filters, the newest alert's
    message as the summary, and --wide never cutting ids."""
    store.add_alerts([make_alert(1, zone="Bronx", severity="Severe"),
                      make_alert(2, zone="Queens", severity="Minor", rule="other"),
                      make_alert(3, zone="Bronx", severity="Severe", hours=1)])
    env = {"CITYWATCH_DATABASE_URL": store.url}
    listed = json.loads(run("incidents", "list", "--json", env=env).stdout)
    by_zone = {i["zone_name"]: i for i in listed["items"]}
    assert listed["total"] == 2 and by_zone["Bronx"]["summary"] == "site 3"  # the newest
    bronx = by_zone["Bronx"]["id"]
    severe = json.loads(run("incidents", "list", "--json", "--min-severity", "Severe",
                            "--zone", "bronx", env=env).stdout)
    assert [i["id"] for i in severe["items"]] == [bronx]
    table = run("incidents", "list", env=env)
    assert bronx[:8] in table.stdout and "site 3" in table.stdout
    assert bronx not in table.stdout  # short ids
    assert bronx in run("incidents", "list", "--wide", env=env).stdout
    acked = run("incidents", "ack", bronx[:7], env=env)
    assert acked.returncode == 0 and acked.stdout.split() == [bronx, "acknowledged"]
    missing = run("incidents", "resolve", "zzzz", env=env)
    assert missing.returncode == 1 and "not found" in missing.stderr
    ambiguous = run("incidents", "resolve", "", env=env)
    assert ambiguous.returncode == 1 and "several incident ids" in ambiguous.stderr


def test_subscriptions_from_the_shell(store: IncidentStore) -> None:
    """add (zones checked against the rule set in force), list, test, feed-url, remove,
    by id prefix."""
    store.add_alerts([make_alert(1, zone="Bronx", severity="Severe"),
                      make_alert(2, zone="Queens", severity="Severe")])
    env = {"CITYWATCH_DATABASE_URL": store.url}
    misspelt = run("subscriptions", "add", "--team", "air", "--zone", "Bronxx", env=env)
    assert misspelt.returncode == 2
    assert "unknown zone 'Bronxx' (did you mean 'Bronx'" in misspelt.stderr
    bad_severity = run("subscriptions", "add", "--team", "air", "--min-severity", "Sever",
                       env=env)
    assert bad_severity.returncode == 2 and "--min-severity" in bad_severity.stderr
    added = run("subscriptions", "add", "--team", "air", "--zone", "bronx", "--json", env=env)
    assert added.returncode == 0, added.stderr
    created = json.loads(added.stdout)
    assert created["zones"] == ["Bronx"]
    listed = json.loads(run("subscriptions", "list", "--json", env=env).stdout)
    assert [s["id"] for s in listed["items"]] == [created["id"]]
    tested = json.loads(run("subscriptions", "test", created["id"][:6], "--json",
                            env=env).stdout)
    assert [a["zone"] for a in tested["alerts"]] == ["Bronx"]
    url = run("subscriptions", "feed-url", created["id"][:6], env=env)
    assert url.returncode == 0 and "/feeds/key/" in url.stdout
    assert run("subscriptions", "feed-url", created["id"][:6], "--revoke",
               env=env).returncode == 0
    removed = run("subscriptions", "remove", created["id"][:6], env=env)
    assert removed.returncode == 0
    assert json.loads(run("subscriptions", "list", "--json", env=env).stdout)["items"] == []


def test_demo_shows_progress_a_reconciled_summary_and_next_steps(tmp_path: Path) -> None:
    done = run("demo", env={"CITYWATCH_DATA_DIR": str(tmp_path)}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == f"store: sqlite:///{tmp_path / 'citywatch.db'}"
    assert any(line.startswith("... ") and " events" in line
               for line in done.stderr.splitlines())
    out = " ".join(done.stdout.split())
    emitted, distinct, repeats = map(int, re.search(
        r"alerts this run: (\d+) emitted = (\d+) distinct \+ (\d+) repeats", out).groups())
    assert emitted == distinct + repeats
    new, held = map(int, re.search(r"stored this run: (\d+) new; the store holds (\d+) "
                                   r"alerts", out).groups())
    assert new == held == distinct
    assert "next: citywatch incidents list" in out and "citywatch explain ID" in out


def test_every_option_is_documented_and_json_is_spelled_alike() -> None:
    """Every option of every command has help text, and JSON output is always --json."""
    import typer

    from citywatch.ops.cli import app

    def walk(command: Any, path: str) -> list[tuple[str, Any]]:
        found = [(path, p) for p in command.params]
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, f"{path} {name}")
        return found

    params = walk(typer.main.get_command(app), "citywatch")
    options = [(path, p) for path, p in params if p.param_type_name == "option"
               and p.name not in ("help", "install_completion", "show_completion")]
    assert len(options) > 50
    undocumented = [f"{path} {p.opts[0]}" for path, p in options if not p.help]
    assert undocumented == []
    json_like = {o for _, p in options for o in p.opts if "json" in o}
    assert json_like == {"--json"}
