"""`citywatch connect` and friends, as an integrator runs them: dry runs, Kafka with
kill-and-restart (exactly once by id), dead-letter tail, plug-in discovery."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_helpers import epa_by_date
from kafka_helpers import read_topic

from citywatch.ops.settings import Settings

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
CAP_EXAMPLES = sorted((SHARED / "standards/cap/examples").glob("*.cap"))
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")


def citywatch(*args: str, env: dict[str, str] | None = None,
              **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citywatch.ops.cli", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300, **kwargs)


@pytest.mark.parametrize("example", CAP_EXAMPLES, ids=lambda p: p.name)
def test_cap_dry_run_prints_one_event_per_info_area(example: Path, tmp_path: Path) -> None:
    from lxml import etree

    config = tmp_path / "c.yaml"
    config.write_text(f"path: {example}\n")
    result = citywatch("connect", "cap", "--config", str(config), "--dry-run")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    root = etree.parse(str(example)).getroot()
    ns = {"c": "urn:oasis:names:tc:emergency:cap:1.2"}
    expected = sum(max(1, len(info.findall("c:area", ns))) for info in root.findall("c:info", ns))
    assert len(events) == expected
    has_polygon = bool(root.findall(".//c:polygon", ns))
    assert any((e["geometry"] or {}).get("type") == "Polygon" for e in events) == has_polygon


def test_cap_dry_run_on_a_broken_file_names_file_and_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.cap"
    text = CAP_EXAMPLES[0].read_text()
    broken.write_text(text.replace("<msgType>", "<msgKind>").replace("</msgType>",
                                                                     "</msgKind>"))
    config = tmp_path / "c.yaml"
    config.write_text(f"path: {broken}\n")
    result = citywatch("connect", "cap", "--config", str(config), "--dry-run")
    assert result.returncode == 1
    assert "broken.cap" in result.stderr and "msgKind" in result.stderr
    assert result.stdout == ""


def test_bad_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("pth: nowhere\n")
    result = citywatch("connect", "cap", "--config", str(config), "--dry-run")
    assert result.returncode == 2 and f"{config}: pth" in result.stderr
    assert citywatch("connect", "nope", "--config", str(config)).returncode == 2


@pytest.mark.parametrize("kind", ["cap", "file"])
def test_a_glob_matching_nothing_exits_2_naming_the_pattern(kind: str, tmp_path: Path) -> None:
    pattern = tmp_path / "incoming" / "*.xml"
    config = tmp_path / "c.yaml"
    import yaml

    from citywatch.ops.settings import DEMO_DIR

    feed = {} if kind == "cap" else yaml.safe_load(
        (DEMO_DIR / "feeds/i94_traffic.yaml").read_text())
    config.write_text(yaml.safe_dump({**feed, "path": str(pattern)}))
    result = citywatch("connect", kind, "--config", str(config), "--dry-run")
    assert result.returncode == 2, result.stderr
    assert str(pattern) in result.stderr and len(result.stderr.splitlines()) <= 2


def test_kill_and_restart_produces_each_record_once(broker: str, tmp_path: Path) -> None:
    """SIGKILL a connector mid-file, restart it: every record id reaches Kafka once."""
    settings = Settings(kafka_bootstrap=broker, topic_prefix=f"k{os.getpid()}.",
                        data_dir=tmp_path / "state")
    env = settings.to_env()
    config = epa_by_date(SHARED, tmp_path, speed=365 * 86400 / 8)  # the year in about 8 s
    first = subprocess.Popen([sys.executable, "-m", "citywatch.ops.cli", "connect", "file",
                              "--config", str(config)], env={**os.environ, **env},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    topic = settings.topics.raw("environment")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.3)
        if _exists(broker, topic) and len(read_topic(broker, topic)) > 2500:
            break
    first.send_signal(signal.SIGKILL)
    first.wait()
    partial = len(read_topic(broker, topic))
    assert 0 < partial < 10_284, "the kill did not land mid-file"

    second = citywatch("connect", "file", "--config", str(config), env=env)
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    ids = [json.loads(v)["id"] for v in read_topic(broker, topic, timeout_s=60)]
    assert len(ids) == len(set(ids)) == 10_284  # no duplicate, no missing record
    assert summary["events"] + partial == 10_284
    assert summary["skipped_duplicates"] >= 0


def _exists(broker: str, topic: str) -> bool:
    from citywatch.streams.kafka_admin import KafkaAdmin

    with KafkaAdmin(broker) as admin:
        return bool(admin.end_offsets([topic]))


def test_broker_command_stops_its_child_on_sigterm_and_refuses_a_taken_port() -> None:
    """SIGTERM to `citywatch broker` stops the Tansu child (the port is free again);
    a port already taken is reported at once with exit 2."""
    import signal
    import socket
    import time

    from citywatch.streams.broker import free_port, port_taken

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "citywatch.ops.cli", "broker",
                                "--port", str(port)], stdout=subprocess.PIPE, text=True)
    assert "embedded broker at" in (process.stdout.readline() if process.stdout else "")
    assert port_taken(port)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    deadline = time.monotonic() + 10
    while port_taken(port):
        assert time.monotonic() < deadline, "the broker child still holds the port"
        time.sleep(0.1)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        started = time.monotonic()
        taken = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "broker",
                                "--port", str(port)], capture_output=True, text=True,
                               timeout=60)
    assert taken.returncode == 2 and time.monotonic() - started < 15
    assert taken.stderr.strip().splitlines() == [
        f"cannot start the embedded broker: port {port} on 127.0.0.1 is already in use; "
        "choose another with --port"]
