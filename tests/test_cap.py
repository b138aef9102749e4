"""CAP 1.2 export details: polygons from real zones, circles, Update/Cancel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from factories import make_alert
from lxml import etree

from citywatch.geo.zones import ZoneIndex, ZoneLayer
from citywatch.ops.cap import CAP_NS, CapWriter, cap_time, polygon_ring


def _points(ring: str) -> list[tuple[float, float]]:
    return [tuple(map(float, pair.split(","))) for pair in ring.split()]


def test_zone_polygons_are_closed_and_small(shared_data) -> None:
    layer = ZoneLayer.from_file("nyc", shared_data / "boundaries/new-york-city-boroughs.geojson")
    for geometry in layer.geometries:
        points = _points(polygon_ring(geometry))
        assert 4 <= len(points) <= 100
        assert points[0] == points[-1]
        lats, lons = np.array(points).T
        assert lats.min() > 40 and lats.max() < 41.5 and lons.min() > -75  # lat,lon order


def test_alert_in_a_zone_carries_its_polygon(shared_data) -> None:
    layer = ZoneLayer.from_file("nyc-boroughs",
                                shared_data / "boundaries/new-york-city-boroughs.geojson")
    writer = CapWriter("citywatch@city.example", ZoneIndex([layer]))
    bronx = layer.zone_ids[layer.zone_names.index("Bronx")]
    alert = make_alert(1, zone=bronx)
    root = etree.fromstring(writer.alert(alert))
    area = root.find(f"{{{CAP_NS}}}info/{{{CAP_NS}}}area")
    assert area.findtext(f"{{{CAP_NS}}}areaDesc") == bronx
    assert area.find(f"{{{CAP_NS}}}polygon") is not None
    params = {p.findtext(f"{{{CAP_NS}}}valueName"): p.findtext(f"{{{CAP_NS}}}value")
              for p in root.iter(f"{{{CAP_NS}}}parameter")}
    assert params["rule_id"] == "pm25-high" and params["source_event_ids"] == "ev-1"
    assert root.findtext(f"{{{CAP_NS}}}sent") == cap_time(alert.raised_at)


def test_alert_without_zone_gets_a_circle() -> None:
    writer = CapWriter("citywatch@city.example")
    root = etree.fromstring(writer.alert(make_alert(2, zone=None, lon=-93.17, lat=44.96)))
    circle = root.findtext(f"{{{CAP_NS}}}info/{{{CAP_NS}}}area/{{{CAP_NS}}}circle")
    assert circle == "44.960000,-93.170000 0"


def test_proximity_alert_carries_its_circle() -> None:
    from datetime import UTC, datetime

    from citywatch.geo.zones import ZoneIndex
    from citywatch.rules.engine import RuleEngine
    from citywatch.rules.model import RuleSet
    from citywatch.streams.envelope import make_envelope

    engine = RuleEngine(RuleSet.model_validate({"rules": [{
        "id": "near-sf", "domain": "disaster",
        "condition": {"type": "proximity", "point": [-122.4194, 37.7749], "within_m": 100000},
        "alert": {"severity": "Minor", "category": "Geo", "message": "quake"}}]}),
        ZoneIndex([]))
    quake = make_envelope(source="usgs", source_record_id="nc1", domain="disaster",
                          kind="earthquake.reported", time=datetime(2023, 8, 1, tzinfo=UTC),
                          entity_id="nc1", attributes={"mag": 3.0},
                          geometry={"type": "Point", "coordinates": [-122.27, 37.87]})
    (alert,) = engine.evaluate([quake])
    root = etree.fromstring(CapWriter("citywatch@city.example").alert(alert))
    circle = root.findtext(f"{{{CAP_NS}}}info/{{{CAP_NS}}}area/{{{CAP_NS}}}circle")
    assert circle == "37.774900,-122.419400 100"


def _quake_alert(valid_for: str | None):  # noqa: ANN202 - an Alert
    from datetime import UTC, datetime

    from citywatch.rules.engine import RuleEngine
    from citywatch.rules.model import RuleSet
    from citywatch.streams.envelope import make_envelope

    spec = {"severity": "Minor", "category": "Geo", "message": "M{mag}"}
    if valid_for is not None:
        spec["valid_for"] = valid_for
    engine = RuleEngine(RuleSet.model_validate({"rules": [{
        "id": "any-quake", "domain": "disaster",
        "condition": {"type": "threshold", "attribute": "mag", "op": ">=", "value": 2},
        "alert": spec}]}), ZoneIndex([]))
    quake = make_envelope(source="usgs", source_record_id="nc1", domain="disaster",
                          kind="earthquake.reported", time=datetime(2023, 8, 1, tzinfo=UTC),
                          entity_id="nc1", attributes={"mag": 3.0},
                          geometry={"type": "Point", "coordinates": [-122.27, 37.87]})
    (alert,) = engine.evaluate([quake])
    return alert


def test_cap_expires_follows_the_rules_validity_and_status_follows_the_deployment() -> None:
    from datetime import timedelta

    info = f"{{{CAP_NS}}}info/{{{CAP_NS}}}"
    two_hours = _quake_alert("2h")
    assert two_hours.expires_at == two_hours.event_time + timedelta(hours=2)
    root = etree.fromstring(CapWriter("citywatch@city.example").alert(two_hours))
    assert root.findtext(f"{{{CAP_NS}}}status") == "Actual"
    assert root.findtext(f"{info}effective") == cap_time(two_hours.event_time)
    assert root.findtext(f"{info}expires") == cap_time(two_hours.event_time
                                                        + timedelta(hours=2))
    default = _quake_alert(None)
    assert default.expires_at == default.event_time + timedelta(hours=24)
    # a replay of 2023 data in a sandbox: an exercise, valid from when it was raised
    writer = CapWriter("citywatch@city.example", status="Exercise")
    root = etree.fromstring(writer.alert(two_hours))
    writer.validate(writer.alert(two_hours))
    assert root.findtext(f"{{{CAP_NS}}}status") == "Exercise"
    assert root.findtext(f"{info}effective") == cap_time(two_hours.raised_at)
    assert root.findtext(f"{info}expires") == cap_time(two_hours.raised_at
                                                        + timedelta(hours=2))
    params = {p.findtext(f"{{{CAP_NS}}}valueName"): p.findtext(f"{{{CAP_NS}}}value")
              for p in root.iter(f"{{{CAP_NS}}}parameter")}
    assert params["event_time"] == cap_time(two_hours.event_time)


AGGREGATOR = {"rules": [{
    "id": "cap-relay", "domain": "disaster", "kinds": ["cap.alert", "cap.update", "cap.cancel"],
    "condition": {"type": "match", "attribute": "status", "values": ["Actual"]},
    "alert": {"severity": "Severe", "category": "Met", "message": "{headline}"}}]}


def _raise(paths: list, store) -> list:
    """CAP files → the connector's events → the rule engine's alerts → the store."""
    from citywatch.connectors.cap import CapSource
    from citywatch.rules.backtest import run_rules
    from citywatch.rules.model import RuleSet
    from citywatch.streams.envelope import Envelope

    events = [e for e in CapSource(paths=paths).run() if isinstance(e, Envelope)]
    alerts = run_rules(RuleSet.model_validate(AGGREGATOR), events)
    store.add_alerts(alerts)
    return alerts


def _pairs(text: str) -> list[tuple[float, float]]:
    return [tuple(float(v) for v in pair.split(",")) for pair in text.split()]


def test_cap_examples_round_trip_through_alerts_and_back_to_cap(shared_data, store) -> None:
    """The three CAP 1.2 examples: ingest keeps what a re-publication needs; each alert
    raised from them exports as valid CAP 1.2 referencing the original, with its
    instruction and the polygon's exact coordinates."""
    from sqlalchemy import select

    from citywatch.connectors.cap import parse_cap
    from citywatch.ops.store.schema import AlertRow

    examples = sorted((shared_data / "standards/cap/examples").glob("*.cap"))
    assert len(examples) == 3
    alerts = _raise(examples, store)
    assert len(alerts) == len(examples)  # one info, one area each
    writer = CapWriter(sender="citywatch@example.org")
    ns = {"c": CAP_NS}
    with store.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(select(AlertRow)).all()}
    for example in examples:
        original = parse_cap(example.read_bytes())
        sender = original.findtext("c:sender", namespaces=ns)
        identifier = original.findtext("c:identifier", namespaces=ns)
        sent = original.findtext("c:sent", namespaces=ns)
        row = next(r for r in rows.values() if r.attributes["identifier"] == identifier)
        assert row.cap_message == f"{sender},{identifier}"
        for name, attribute in (("description", "description"),
                                ("instruction", "instruction"), ("expires", "expires"),
                                ("msgType", "msg_type")):
            found = original.find(f".//c:{name}", ns)
            if found is not None:
                assert row.attributes[attribute] == found.text.strip()
        document = writer.alert(row)  # validated against cap12.xsd as it is written
        exported = etree.fromstring(document)
        assert exported.findtext("c:references", namespaces=ns) == f"{sender},{identifier},{sent}"
        instruction = original.findtext(".//c:instruction", namespaces=ns)
        if instruction:
            assert exported.findtext(".//c:instruction", namespaces=ns) == instruction.strip()
        polygons = original.findall(".//c:polygon", ns)
        assert [_pairs(p.text) for p in exported.findall(".//c:polygon", ns)] == [
            _pairs(p.text) for p in polygons]
    assert any(original.findall(".//c:polygon", ns) for original in
               (parse_cap(e.read_bytes()) for e in examples))


def test_cap_update_and_cancel_change_the_incident_raised_from_the_original(
        shared_data, store) -> None:
    """An Update referencing the thunderstorm annotates its incident, a Cancel resolves
    it: both audited with the CAP sender as the actor (fixtures written for this)."""
    from citywatch.ops.store.queries import get_incident

    fixtures = Path(__file__).parent / "fixtures"
    first = _raise([shared_data / "standards/cap/examples/thunderstorm.cap"], store)
    incident_id = get_incident_id(store, first[0].id)
    _raise([fixtures / "cap_thunderstorm_update.cap"], store)
    after_update = get_incident(store, incident_id)
    assert after_update["incident"].status == "new"
    updates = [a for a in after_update["audit"] if a.action == "cap_update"]
    assert [(a.actor, a.detail["identifier"]) for a in updates] == [
        ("cap:KSTO@NWS.NOAA.GOV", "KSTO1055887203-U1")]
    _raise([fixtures / "cap_thunderstorm_cancel.cap"], store)
    cancelled = get_incident(store, incident_id)
    assert cancelled["incident"].status == "resolved"
    resolve = [a for a in cancelled["audit"] if a.action == "resolve"]
    assert [(a.actor, a.detail["msg_type"], a.detail["identifier"]) for a in resolve] == [
        ("cap:KSTO@NWS.NOAA.GOV", "Cancel", "KSTO1055887203-C1")]
    # the Update's own incident is referenced by the Cancel too: resolved as well
    update_alert = [r for r in _alerts(store) if r.attributes["identifier"].endswith("-U1")]
    assert get_incident(store, update_alert[0].incident_id)["incident"].status == "resolved"


def get_incident_id(store, alert_id: str) -> str:
    return next(r.incident_id for r in _alerts(store) if r.id == alert_id)


def _alerts(store) -> list:
    from sqlalchemy import select

    from citywatch.ops.store.schema import AlertRow

    with store.engine.connect() as conn:
        return list(conn.execute(select(AlertRow)).all())
