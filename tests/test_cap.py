"""CAP 1.2 export details: polygons from real zones, circles, Update/Cancel."""

from __future__ import annotations

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
