"""Every built-in connector passes the contract kit on real data: file, cap and
ngsi-ld on the shared files, http against a local server, mqtt against Mosquitto."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from data_helpers import malformed_epa

from citywatch.connectors.cap import CapSource
from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.http import HttpConfig, HttpSource
from citywatch.connectors.mqtt import MqttConfig, MqttSource
from citywatch.connectors.ngsi import NgsiLdSource
from citywatch.connectors.testing import ConnectorContract, collect
from citywatch.ops.settings import DEMO_DIR
from citywatch.streams.envelope import Envelope

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
CAP_DIR = SHARED / "standards/cap"
FIWARE = SHARED / "standards/fiware"
pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")


class TestFileContract(ConnectorContract):
    resume_after = 25

    def make_source(self, session: str = "default") -> FileSource:
        feed = load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")
        return FileSource(feed, path=SHARED / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv")

    def make_bad_source(self) -> FileSource:
        config, _ = malformed_epa(SHARED, Path(self._tmp()))
        return FileSource(load_feed(config))

    def _tmp(self) -> str:
        import tempfile

        return tempfile.mkdtemp()


class TestCapContract(ConnectorContract):
    resume_after = 1

    def make_source(self, session: str = "default") -> CapSource:
        return CapSource(paths=sorted((CAP_DIR / "examples").glob("*.cap"))
                         + sorted((CAP_DIR / "examples_cap11").glob("*.cap")))

    def make_bad_source(self) -> CapSource:
        import tempfile

        broken = Path(tempfile.mkdtemp()) / "truncated.cap"
        broken.write_bytes((CAP_DIR / "examples/thunderstorm.cap").read_bytes()[:400])
        return CapSource(paths=[CAP_DIR / "examples/thunderstorm.cap", broken])


def test_cap_polygons_circles_and_versions() -> None:
    items = collect(CapSource(paths=[CAP_DIR / "examples/thunderstorm.cap",
                                     CAP_DIR / "examples_cap11/earthquake.cap",
                                     CAP_DIR / "examples/wcatwc-warning.cap"]))
    storm, quake, tsunami = items
    assert storm.geometry["type"] == "Polygon"
    assert storm.attributes["severity"] == "Severe" and storm.kind == "cap.alert"
    assert quake.geometry["type"] == "Polygon"  # circle → polygon in metres
    assert tsunami.geometry is None and tsunami.attributes["severity"] == "Extreme"
    assert tsunami.kind == "cap.update"


def test_cap_11_document_is_rejected_by_12_namespace_rules(tmp_path: Path) -> None:
    text = (CAP_DIR / "examples_cap11/weather.cap").read_text()
    mixed = tmp_path / "mixed.cap"
    mixed.write_text(text.replace("cap:1.1", "cap:1.3"))
    (item,) = collect(CapSource(paths=[mixed]))
    assert "not a CAP 1.1/1.2 alert" in item.error


class TestNgsiContract(ConnectorContract):
    resume_after = 2

    def make_source(self, session: str = "default") -> NgsiLdSource:
        return NgsiLdSource(paths=[FIWARE / "AirQualityObserved/examples/example.json",
                                   *sorted((FIWARE / "TrafficFlowObserved/examples")
                                           .glob("example*"))])

    def make_bad_source(self) -> NgsiLdSource:
        return NgsiLdSource(paths=[FIWARE / "AirQualityObserved/examples/example.json",
                                   FIWARE / "AirQualityObserved/examples/"
                                   "example-normalized.jsonld"])


def test_ngsi_forms_map_to_the_same_event() -> None:
    forms = sorted((FIWARE / "TrafficFlowObserved/examples").glob("example*"))
    events = [e for e in collect(NgsiLdSource(paths=forms)) if isinstance(e, Envelope)]
    assert len(events) == 4
    assert {e.domain for e in events} == {"traffic"}
    assert {e.attributes["intensity"] for e in events} == {197}
    (aq,) = collect(NgsiLdSource(paths=[FIWARE / "AirQualityObserved/examples/example.json"]))
    assert aq.attributes["tsp"] == 73.3  # accepted: the documented tsp relaxation


class _FileServer(BaseHTTPRequestHandler):
    """Serves a dict of path → bytes with a strong ETag; counts conditional hits."""

    files: dict[str, bytes] = {}
    not_modified = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if self.headers.get("If-None-Match") == etag:
            type(self).not_modified += 1
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[str, type[_FileServer]]]:
    cap_entries = "".join(
        f"<entry><id>urn:x:{p.stem}</id><title>{p.stem}</title><updated>"
        f"2024-01-01T00:00:00Z</updated><content type='application/cap+xml'>"
        f"{p.read_text().split('?>', 1)[1]}</content></entry>"
        for p in sorted((CAP_DIR / "examples").glob("*.cap")))
    bad_json = json.dumps([
        {"id": "a", "time": 1691117533180, "mag": 1.3},
        {"id": "b", "time": "yesterday", "mag": 2.0},
        {"id": "c", "time": 1691117000000, "mag": "big"}]).encode()
    handler = type("Server", (_FileServer,), {"files": {
        "/usgs.geojson": (SHARED / "disasters/usgs_all_week.geojson").read_bytes(),
        "/thunderstorm.cap": (CAP_DIR / "examples/thunderstorm.cap").read_bytes(),
        "/alerts.atom": (f"<feed xmlns='http://www.w3.org/2005/Atom'><id>urn:x</id>"
                         f"<title>t</title><updated>2024-01-01T00:00:00Z</updated>"
                         f"{cap_entries}</feed>").encode(),
        "/bad.json": bad_json}, "not_modified": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


USGS_MAPPING = {"domain": "disaster", "kind": "earthquake.reported", "record_id": ["id"],
                "entity_id": "id", "time": {"field": "time", "unit": "ms"},
                "geometry": {"from_record": True},
                "attributes": {"mag": {"field": "mag", "type": "float", "optional": True}}}


class TestHttpContract(ConnectorContract):
    resume_after = 500

    @pytest.fixture(autouse=True)
    def _server(self, http_server) -> None:
        self.base, self.handler = http_server

    def make_source(self, session: str = "default") -> HttpSource:
        return HttpSource(HttpConfig(name="usgs-http", url=f"{self.base}/usgs.geojson",
                                     format="geojson", interval=0.05, max_polls=1,
                                     mapping=USGS_MAPPING))

    def make_bad_source(self) -> HttpSource:
        mapping = {**USGS_MAPPING, "geometry": None}
        return HttpSource(HttpConfig(name="bad-http", url=f"{self.base}/bad.json",
                                     format="json", max_polls=1, mapping=mapping))

    def test_stops_promptly(self) -> None:
        from citywatch.connectors.testing import assert_stops_within

        source = HttpSource(HttpConfig(name="usgs-http", url=f"{self.base}/usgs.geojson",
                                       format="geojson", interval=30, mapping=USGS_MAPPING))
        assert_stops_within(source)


def test_http_etag_dedupe_cap_and_atom(http_server) -> None:
    base, handler = http_server
    source = HttpSource(HttpConfig(name="usgs-http", url=f"{base}/usgs.geojson",
                                   format="geojson", interval=0.01, max_polls=3,
                                   mapping=USGS_MAPPING))
    before = handler.not_modified
    items = collect(source)
    assert len(items) == 2124  # one poll's worth: later polls were 304 Not Modified
    assert handler.not_modified - before == 2
    cap = collect(HttpSource(HttpConfig(name="cap-http", url=f"{base}/thunderstorm.cap",
                                        format="cap", max_polls=1)))
    assert [i.geometry["type"] for i in cap] == ["Polygon"]
    atom = collect(HttpSource(HttpConfig(name="atom-http", url=f"{base}/alerts.atom",
                                         format="atom", max_polls=1)))
    assert len(atom) == 3 and all(isinstance(i, Envelope) for i in atom)


def test_http_backs_off_when_the_server_is_down() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    source = HttpSource(HttpConfig(name="down", url=f"http://127.0.0.1:{port}/x",
                                   format="cap", max_polls=2, timeout=1))
    started = time.monotonic()
    assert collect(source) == []
    assert source.errors == 2 and time.monotonic() - started >= 1.0  # one 1 s back-off


def _mosquitto() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=1).close()
        return True
    except OSError:
        return False


EPA_JSON_MAPPING = {"domain": "environment", "kind": "air_quality.observed",
                    "record_id": ["Site ID", "POC", "Date"], "entity_id": "Site ID",
                    "time": {"field": "Date", "format": "%m/%d/%Y",
                             "timezone": "America/New_York"},
                    "geometry": {"lon": "SITE_LONGITUDE", "lat": "SITE_LATITUDE"},
                    "attributes": {"pm25": {"field": "Daily Mean PM2.5 Concentration",
                                            "type": "float"}}}


def _publish(topic: str, payloads: list[bytes]) -> None:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4()}")
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    for payload in payloads:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


def _open_session(client_id: str, topic: str) -> None:
    """Create the persistent session (subscription) so queued messages wait for it."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                         clean_session=False)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    client.subscribe(topic, qos=1)
    subscribed.wait(5)
    client.loop_stop()
    client.disconnect()


def _epa_payloads(count: int) -> list[bytes]:
    import csv

    with (SHARED / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv").open() as fh:
        rows = [r for r, _ in zip(csv.DictReader(fh), range(count), strict=False)]
    return [json.dumps(r).encode() for r in rows]


@pytest.mark.skipif(not _mosquitto(), reason="no MQTT broker at 127.0.0.1:1883")
class TestMqttContract(ConnectorContract):
    resume_after = 7

    def setup_method(self) -> None:
        self.topic = f"citywatch-test/{uuid.uuid4().hex}"
        self.sessions: dict[str, str] = {}

    def _source(self, client_id: str, payloads: list[bytes] | None) -> MqttSource:
        if payloads is not None:
            _open_session(client_id, self.topic)
            _publish(self.topic, payloads)
        return MqttSource(MqttConfig(name="epa-mqtt", topics=[self.topic],
                                     client_id=client_id, idle_timeout=1.0,
                                     mapping=EPA_JSON_MAPPING))

    def make_source(self, session: str = "default") -> MqttSource:
        known = session in self.sessions
        client_id = self.sessions.setdefault(session, f"cw-test-{uuid.uuid4().hex[:12]}")
        return self._source(client_id, None if known else _epa_payloads(20))

    def make_bad_source(self) -> MqttSource:
        payloads = _epa_payloads(3) + [b"not json", json.dumps({"Date": "x"}).encode()]
        return self._source(f"cw-test-{uuid.uuid4().hex[:12]}", payloads)


@pytest.mark.skipif(not _mosquitto(), reason="no MQTT broker at 127.0.0.1:1883")
def test_mqtt_senml_pack() -> None:
    topic = f"citywatch-test/{uuid.uuid4().hex}"
    client_id = f"cw-test-{uuid.uuid4().hex[:12]}"
    _open_session(client_id, topic)
    pack = [{"bn": "urn:dev:site-360050110:", "bt": 1641042000, "n": "pm25", "v": 8.0},
            {"n": "lat", "v": 40.816}, {"n": "lon", "v": -73.902}]
    _publish(topic, [json.dumps(pack).encode()])
    source = MqttSource(MqttConfig(name="senml", topics=[topic], client_id=client_id,
                                   payload="senml", domain="environment",
                                   kind="air_quality.observed", idle_timeout=1.0))
    (event,) = collect(source)
    source.checkpoint()
    source.close()
    assert event.entity_id == "urn:dev:site-360050110"
    assert event.attributes == {"pm25": 8.0}
    assert event.geometry == {"type": "Point", "coordinates": [-73.902, 40.816]}


def test_a_bad_record_from_a_plugins_envelope_call_is_a_dead_letter_and_the_run_goes_on(
        ) -> None:
    """A plug-in that yields ``self.envelope(...)`` for every row: the invalid rows
    (latitude beyond 90, a naive time) come out as dead letters naming field and record,
    and every valid row after them still comes out."""
    from datetime import UTC, datetime

    from citywatch.connectors.base import Source
    from citywatch.streams.deadletter import DeadLetter
    from citywatch.streams.envelope import Envelope

    rows = [(1, 40.7, True), (2, 95.0, True), (3, 40.8, False), (4, 40.9, True)]

    class Sensors(Source):
        domain = "environment"

        def run(self):
            for n, lat, aware in rows:
                yield self.envelope(
                    record_id=str(n), kind="air_quality.observed", entity_id=f"s{n}",
                    time=datetime(2024, 1, 1, n, tzinfo=UTC if aware else None),
                    geometry={"type": "Point", "coordinates": [-73.9, lat]},
                    attributes={"pm25": 10.0 * n}, locator=f"sensors.csv:{n + 1}")

    items = list(Sensors(name="sensors").run())
    assert [type(i) for i in items] == [Envelope, DeadLetter, DeadLetter, Envelope]
    assert [(i.locator, i.field) for i in items if isinstance(i, DeadLetter)] == [
        ("sensors.csv:3", "geometry.coordinates"), ("sensors.csv:4", "time")]
    assert [i.attributes["pm25"] for i in items if isinstance(i, Envelope)] == [10.0, 40.0]


def test_nested_json_lines_map_through_paths_and_bad_paths_are_named(tmp_path: Path) -> None:
    """openFDA-shaped food event reports (a fixture written for this test): dotted keys
    and list indexes reach nested fields; each record a path cannot be followed in is a
    dead letter naming the whole path and the line."""
    from citywatch.connectors.file import FileSource
    from citywatch.connectors.mapping import FeedMapping
    from citywatch.streams.deadletter import DeadLetter
    from citywatch.streams.envelope import Envelope

    fixture = Path(__file__).parent / "fixtures/openfda_food_events.jsonl"
    mapping = FeedMapping.model_validate({
        "name": "openfda-food", "domain": "food_safety", "kind": "food.adverse_event",
        "format": "jsonl", "path": str(fixture), "record_id": ["report_number"],
        "entity_id": "products[0].name_brand",
        "time": {"field": "date_created", "format": "%Y%m%d"},
        "attributes": {"age": {"field": "consumer.age", "type": "int"},
                       "industry": {"field": "products[0].industry_name", "type": "str"},
                       "first_reaction": {"field": "reactions[0]", "type": "str"}}})
    items = list(FileSource(mapping).run())
    records = [json.loads(line) for line in fixture.read_text().splitlines()]
    good = [i for i in items if isinstance(i, Envelope)]
    assert [(e.entity_id, e.attributes["age"], e.attributes["industry"]) for e in good] == [
        (r["products"][0]["name_brand"], int(r["consumer"]["age"]),
         r["products"][0]["industry_name"]) for r in records[:2]]
    letters = {i.locator: (i.field, i.error) for i in items if isinstance(i, DeadLetter)}
    name = fixture.name
    assert letters == {
        f"{name}:3": ("consumer.age", "missing from the record"),
        f"{name}:4": ("products[0].name_brand", "missing from the record"),
        f"{name}:5": ("consumer.age", "consumer is not an object")}
    with pytest.raises(ValueError, match="not a field path"):
        FeedMapping.model_validate({**mapping.model_dump(), "attributes": {
            "age": {"field": "consumer.age[x]"}}})


def test_a_newest_first_feed_read_in_event_time_order_gives_the_in_order_window_alerts(
        shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The USGS week, published newest first: read with ``order: event_time`` (in small
    spilled runs, the external merge) it gives exactly the window alerts of the same file
    sorted by time; read in file order, a window rule finds most of it late, and the
    connector says so. Daily counts checked against pandas."""
    import logging

    import pandas as pd

    from citywatch.connectors.file import FileSource, load_feed
    from citywatch.ops.settings import DEMO_DIR
    from citywatch.rules.engine import RuleEngine
    from citywatch.rules.frame import EventFrame
    from citywatch.rules.model import RuleSet
    from citywatch.streams.envelope import Envelope

    collection = json.loads((shared_data / "disasters/usgs_all_week.geojson").read_text())
    features = sorted(collection["features"], key=lambda f: f["properties"]["time"])
    for name, ordered in (("oldest_first", features), ("newest_first", features[::-1])):
        (tmp_path / f"{name}.geojson").write_text(json.dumps({**collection,
                                                              "features": ordered}))
    (tmp_path / "world.geojson").write_text(json.dumps({
        "type": "FeatureCollection", "features": [{
            "type": "Feature", "properties": {"name": "World"}, "geometry": {
                "type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90],
                                                    [-180, 90], [-180, -90]]]}}]}))
    rules = RuleSet.model_validate({
        "zones": [{"layer": "world", "path": str(tmp_path / "world.geojson")}],
        "rules": [{"id": "quakes-per-day", "domain": "disaster",
                   "condition": {"type": "window", "attribute": "mag", "aggregate": "count",
                                 "size": "1d", "group_by": "zone:world", "op": ">=",
                                 "value": 1, "where": {"type": "threshold",
                                                       "attribute": "mag", "op": ">=",
                                                       "value": 2.5}},
                   "alert": {"severity": "Minor", "category": "Geo",
                             "message": "{value} quakes M2.5+"}}]})
    usgs = load_feed(DEMO_DIR / "feeds/usgs_earthquakes.yaml")

    def alerts(name: str, order: str) -> tuple[dict[str, float], int]:
        feed = usgs.model_copy(update={"path": tmp_path / f"{name}.geojson", "order": order})
        source = FileSource(feed)
        source.run_size = 500  # spill runs to disk: the bounded-memory path
        source.warn_when_backwards = True  # as citywatch connect sets it
        events = [e for e in source.run() if isinstance(e, Envelope)]
        engine = RuleEngine.from_ruleset(rules)
        found, late = [], 0
        for start in range(0, len(events), 200):  # frames in arrival order, as a worker
            result = engine.process(EventFrame.from_envelopes(
                events[start:start + 200], engine.zones).columns,
                envelopes=events[start:start + 200])
            result.commit_state()
            found += result.alerts
            late += len(result.late)
        found += engine.flush()
        return {a.attributes["window_start"][:10]: a.attributes["value"] for a in found}, late

    in_order, none_late = alerts("oldest_first", "file")
    with caplog.at_level(logging.WARNING, logger="citywatch.connectors.file"):
        sorted_on_read, sorted_late = alerts("newest_first", "event_time")
        assert "run backwards" not in caplog.text
        as_published, late = alerts("newest_first", "file")
    assert sorted_on_read == in_order and none_late == sorted_late == 0
    days = pd.to_datetime(pd.Series([f["properties"]["time"] for f in features
                                     if (f["properties"]["mag"] or 0) >= 2.5]),
                          unit="ms", utc=True).dt.strftime("%Y-%m-%d").value_counts()
    assert in_order == {day: float(n) for day, n in days.items()}
    assert late > days.sum() / 2 and len(as_published) < len(in_order)
    assert "run backwards" in caplog.text and "order: event_time" in caplog.text


def test_projected_feed_coordinates_need_the_mappings_crs(shared_data: Path,
                                                         tmp_path: Path) -> None:
    """EPA site coordinates converted here to New York State Plane feet (EPSG:2263):
    without ``geometry.crs`` every row is a dead letter that suggests it; with it the
    envelopes carry the original longitude/latitude."""
    import csv

    from pyproj import Transformer

    from citywatch.connectors.file import FileSource, load_feed
    from citywatch.ops.settings import DEMO_DIR
    from citywatch.streams.deadletter import DeadLetter
    from citywatch.streams.envelope import Envelope

    feed = load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")
    source = shared_data / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv"
    with source.open() as fh:
        rows = list(csv.DictReader(fh))[:200]
    to_feet = Transformer.from_crs("EPSG:4326", "EPSG:2263", always_xy=True)
    lon_field, lat_field = feed.geometry.lon, feed.geometry.lat
    projected = tmp_path / "epa_2263.csv"
    with projected.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            x, y = to_feet.transform(float(row[lon_field]), float(row[lat_field]))
            writer.writerow({**row, lon_field: repr(x), lat_field: repr(y)})
    plain = [i for i in FileSource(feed.model_copy(update={"path": projected})).run()]
    assert plain and all(isinstance(i, DeadLetter) and "geometry.crs" in i.error
                         for i in plain)
    declared = feed.model_copy(update={"path": projected, "geometry": feed.geometry.model_copy(
        update={"crs": "EPSG:2263"})})
    events = [i for i in FileSource(declared).run() if isinstance(i, Envelope)]
    assert len(events) == len(rows)
    for event, row in zip(events, rows, strict=True):
        lon, lat = event.geometry["coordinates"]
        assert abs(lon - float(row[lon_field])) < 1e-7 and abs(lat - float(row[lat_field])) < 1e-7


@pytest.mark.parametrize("broken,reason", [
    ("<polygon>38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89 38.47,-120.14"
     "</polygon>", None),
    ("<polygon>38.47,-120.14 38.34,-119.95 38.52,-119.74</polygon>",
     "polygon needs at least 4 points and a closed ring"),
    ("<polygon>38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89</polygon>",
     "polygon needs at least 4 points and a closed ring"),
    ("<circle>38.47 -120.14 10</circle>", "circle is not 'lat,lon radius'"),
    ("REFERENCES", "references: 'KSTO1055887203' is not 'sender,identifier,sent'"),
])
def test_cap_semantic_checks_beyond_the_schema(shared_data: Path, tmp_path: Path,
                                               broken: str, reason: str | None) -> None:
    """The OASIS thunderstorm example with its area or references broken in ways the XSD
    allows: the message becomes one dead letter naming the problem."""
    from citywatch.connectors.cap import CapSource
    from citywatch.streams.deadletter import DeadLetter

    text = (shared_data / "standards/cap/examples/thunderstorm.cap").read_text()
    if broken == "REFERENCES":
        text = text.replace("<scope>Public</scope>",
                            "<scope>Public</scope><references>KSTO1055887203</references>")
    else:
        start, end = text.index("<polygon>"), text.index("</polygon>") + len("</polygon>")
        text = text[:start] + broken + text[end:]
    path = tmp_path / "storm.cap"
    path.write_text(text)
    items = list(CapSource(paths=[path]).run())
    if reason is None:
        assert not any(isinstance(i, DeadLetter) for i in items)
        return
    assert len(items) == 1 and isinstance(items[0], DeadLetter)
    assert reason in items[0].error and items[0].locator.startswith("storm.cap")
