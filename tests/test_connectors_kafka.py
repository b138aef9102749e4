"""Each built-in connector end to end into the real embedded broker, on real data:
envelopes on raw.<domain>, rejects on deadletter, counts exported, dead letters readable."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from kafka_helpers import read_topic

from citywatch.connectors.cap import CapSource
from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.http import HttpConfig, HttpSource
from citywatch.connectors.mqtt import MqttConfig, MqttSource
from citywatch.connectors.ngsi import NgsiLdSource
from citywatch.connectors.runner import produce
from citywatch.ops.deadletters import tail
from citywatch.ops.settings import DEMO_DIR
from citywatch.streams.deadletter import decode_deadletter
from citywatch.streams.topics import TopicNames

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")


@pytest.fixture
def topics() -> TopicNames:
    return TopicNames(f"c{uuid.uuid4().hex[:8]}.")


def _raw(broker: str, topic: str) -> list[dict]:
    return [msgspec.json.decode(v) for v in read_topic(broker, topic)]


def test_cap_and_ngsi_into_kafka(broker: str, topics: TopicNames) -> None:
    cap = CapSource(paths=sorted((SHARED / "standards/cap/examples").glob("*.cap")))
    report = produce(cap, broker, topics)
    assert report.events_by_domain == {"disaster": 3}
    assert {e["entity_id"] for e in _raw(broker, topics.raw("disaster"))} == {
        "43b080713727", "KSTO1055887203", "PAAQ-2-lqw6d6"}
    fiware = SHARED / "standards/fiware"
    ngsi = NgsiLdSource(paths=[fiware / "AirQualityObserved/examples/example.json",
                               fiware / "AirQualityObserved/examples/example-normalized.json",
                               fiware / "TrafficFlowObserved/examples/example.json"])
    report = produce(ngsi, broker, topics)
    assert report.as_dict()["events_by_domain"] == {"environment": 1, "traffic": 1}
    assert report.dead_letters == 1
    (letter,) = [decode_deadletter(v) for v in read_topic(broker, topics.deadletter)]
    assert letter.source == "ngsi-ld" and letter.field == "precipitation"
    assert letter.locator == "example-normalized.json" and letter.raw
    metrics = report.prometheus("ngsi-ld")
    assert 'outcome="rejected"} 1' in metrics and 'domain="traffic"} 1' in metrics
    shown = list(tail(broker, topics.deadletter, 10))
    assert [d.locator for d in shown] == ["example-normalized.json"]


def test_parquet_file_into_kafka(broker: str, topics: TopicNames, tmp_path: Path) -> None:
    table = pacsv.read_csv(SHARED / "traffic/Metro_Interstate_Traffic_Volume.csv",
                           convert_options=pacsv.ConvertOptions(
                               column_types={"date_time": pa.string()}))
    pq.write_table(table.slice(0, 500), tmp_path / "i94.parquet")
    feed = load_feed(DEMO_DIR / "feeds/i94_traffic.yaml").model_copy(
        update={"format": "parquet", "path": tmp_path / "i94.parquet"})
    report = produce(FileSource(feed), broker, topics)
    assert report.events_by_domain == {"traffic": 500} and report.dead_letters == 0
    first = _raw(broker, topics.raw("traffic"))[0]
    assert first["attributes"]["volume"] == 5545 and first["time"] == "2012-10-02T14:00:00Z"


def test_http_into_kafka(broker: str, topics: TopicNames) -> None:
    directory = str(SHARED / "disasters")

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=directory, **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = HttpSource(HttpConfig(
            name="usgs", url=f"http://127.0.0.1:{server.server_address[1]}/"
                             "usgs_all_week.geojson", format="geojson", max_polls=2,
            interval=0.05, mapping=yaml_mapping("usgs_earthquakes.yaml")))
        report = produce(source, broker, topics)
    finally:
        server.shutdown()
    assert report.events_by_domain == {"disaster": 2124}  # the second poll adds nothing
    assert len(_raw(broker, topics.raw("disaster"))) == 2124


def yaml_mapping(name: str) -> dict:
    import yaml

    feed = yaml.safe_load((DEMO_DIR / "feeds" / name).read_text())
    return {k: v for k, v in feed.items() if k not in {"name", "path", "format"}}


def test_mqtt_into_kafka(broker: str, topics: TopicNames) -> None:
    from test_connectors import EPA_JSON_MAPPING, _epa_payloads, _mosquitto, _open_session
    from test_connectors import _publish as publish

    if not _mosquitto():
        pytest.skip("no MQTT broker at 127.0.0.1:1883")
    topic, client_id = f"citywatch-test/{uuid.uuid4().hex}", f"cw-{uuid.uuid4().hex[:12]}"
    _open_session(client_id, topic)
    publish(topic, _epa_payloads(30) + [b"{broken"])
    source = MqttSource(MqttConfig(name="epa-mqtt", topics=[topic], client_id=client_id,
                                   idle_timeout=1.0, mapping=EPA_JSON_MAPPING))
    report = produce(source, broker, topics)
    assert report.events_by_domain == {"environment": 30} and report.dead_letters == 1
    letters = [decode_deadletter(v) for v in read_topic(broker, topics.deadletter)]
    assert letters[0].locator.startswith(f"mqtt://127.0.0.1:1883/{topic}#")
    assert json.loads(read_topic(broker, topics.raw("environment"))[0])["source"] == "epa-mqtt"


def test_cap_with_a_prefix_parses_like_the_default_namespace(tmp_path: Path) -> None:
    from citywatch.connectors.testing import collect

    text = (SHARED / "standards/cap/examples/thunderstorm.cap").read_text()
    prefixed = tmp_path / "prefixed.cap"
    body = text.split("?>", 1)[1]
    body = body.replace('xmlns = "urn:oasis:names:tc:emergency:cap:1.2"',
                        'xmlns:cap="urn:oasis:names:tc:emergency:cap:1.2"')
    import re

    body = re.sub(r"<(/?)(\w+)", r"<\1cap:\2", body)
    prefixed.write_text('<?xml version="1.0" encoding="UTF-8"?>' + body)
    (plain,) = collect(CapSource(paths=[SHARED / "standards/cap/examples/thunderstorm.cap"]))
    (with_prefix,) = collect(CapSource(paths=[prefixed]))
    assert with_prefix.geometry == plain.geometry
    assert with_prefix.attributes == plain.attributes
