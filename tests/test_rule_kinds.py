"""Rule kinds on real data with counts computed independently (haversine, pandas), and
rule files that are refused, never crashing anything."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from citywatch.connectors.file import FileSource, load_feed
from citywatch.geo.zones import ZoneIndex
from citywatch.ops.settings import DEMO_DIR
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import RuleSetError, parse_ruleset
from citywatch.rules.model import RuleSet
from citywatch.streams.envelope import Envelope, make_envelope

SF = (-122.4194, 37.7749)


def haversine_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(math.sqrt(a))


def engine_for(rules: list[dict], **extra: object) -> RuleEngine:
    return RuleEngine.from_ruleset(RuleSet.model_validate({"rules": rules, **extra}))


ALERT = {"severity": "Minor", "category": "Geo", "message": "M{mag} {distance_km} km"}


def test_usgs_quakes_near_san_francisco_match_haversine(shared_data: Path) -> None:
    engine = engine_for([{
        "id": "quake-near-sf", "domain": "disaster",
        "condition": {"type": "all", "conditions": [
            {"type": "threshold", "attribute": "mag", "op": ">=", "value": 2.5},
            {"type": "proximity", "point": list(SF), "within_m": 100_000}]},
        "alert": ALERT}])
    feed = load_feed(DEMO_DIR / "feeds/usgs_earthquakes.yaml")
    events = [e for e in FileSource(feed, path=shared_data / "disasters/usgs_all_week.geojson")
              .run() if isinstance(e, Envelope)]
    got = {a.entity_id for a in engine.evaluate(events)}

    collection = json.loads((shared_data / "disasters/usgs_all_week.geojson").read_text())
    expected, ambiguous = set(), set()
    for feature in collection["features"]:
        lon, lat = feature["geometry"]["coordinates"][:2]
        km = haversine_km(lon, lat, *SF)
        mag = feature["properties"]["mag"]
        if mag is None or mag < 2.5:
            continue
        if 99.5 <= km <= 100.5:  # the sphere and the ellipsoid may disagree here
            ambiguous.add(feature["id"])
        elif km < 100:
            expected.add(feature["id"])
    assert got - ambiguous == expected
    assert expected  # the week has such quakes
    within_100 = sum(haversine_km(*f["geometry"]["coordinates"][:2], *SF) < 100
                     for f in collection["features"])
    assert within_100 == 31  # SOURCES.md: 31 events lie within 100 km of San Francisco


def _event(value: object, lon: float = -73.9, lat: float = 40.8, i: int = 0) -> Envelope:
    return make_envelope(source="t", source_record_id=str(i), domain="environment",
                         kind="air_quality.observed", time=datetime(2022, 1, 1, tzinfo=UTC),
                         entity_id=f"s{i}", geometry={"type": "Point", "coordinates": [lon, lat]},
                         attributes={"pm25": value})


@pytest.mark.parametrize(("op", "expected"), [("between", [10, 15, 20]),
                                               ("outside", [5, 25])])
def test_between_and_outside(op: str, expected: list[int]) -> None:
    engine = engine_for([{"id": "r", "domain": "environment",
                          "condition": {"type": "threshold", "attribute": "pm25", "op": op,
                                        "range": [10, 20]},
                          "alert": ALERT}])
    events = [_event(v, i=i) for i, v in enumerate([5, 10, 15, 20, 25, "n/a"])]
    assert [a.attributes["pm25"] for a in engine.evaluate(events)] == expected


def test_not_and_site_layer_proximity(tmp_path: Path) -> None:
    sites = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": "PS 1"},
         "geometry": {"type": "Point", "coordinates": [-73.90, 40.80]}},
        {"type": "Feature", "properties": {"name": "PS 2"},
         "geometry": {"type": "Point", "coordinates": [-73.80, 40.70]}}]}
    (tmp_path / "schools.geojson").write_text(json.dumps(sites))
    rules = {"sites": [{"layer": "schools", "path": "schools.geojson"}], "rules": [
        {"id": "near-school", "domain": "environment",
         "condition": {"type": "proximity", "sites": "schools", "within_m": 2000},
         "alert": {"severity": "Minor", "category": "Health",
                   "message": "{distance_km} km from {site}"}},
        {"id": "far-from-schools", "domain": "environment",
         "condition": {"type": "not", "condition": {"type": "proximity", "sites": "schools",
                                                    "within_m": 2000}},
         "alert": {"severity": "Minor", "category": "Health", "message": "far"}}]}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    engine = RuleEngine.from_ruleset(parse_ruleset(path.read_text(), path))
    alerts = engine.evaluate([_event(30, -73.905, 40.80, 0), _event(30, -73.81, 40.70, 1),
                              _event(30, -74.5, 41.0, 2)])
    near = {a.entity_id: a.message for a in alerts if a.rule_id == "near-school"}
    assert near == {"s0": "0.4 km from PS 1", "s1": "0.8 km from PS 2"}
    assert [a.entity_id for a in alerts if a.rule_id == "far-from-schools"] == ["s2"]


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["rules", "id", "domain", "condition", "type", "op",
                                       "value", "range", "alert", "zones", "sites",
                                       "attribute", "conditions", "within_m", "point"]),
                      children, max_size=5),
    max_leaves=20)


@settings(max_examples=150)
@given(yaml_values)
def test_invalid_rule_files_are_refused_with_errors(data: object) -> None:
    text = yaml.safe_dump(data)
    try:
        ruleset = parse_ruleset(text, Path("fuzz.yaml"))
    except RuleSetError as exc:
        assert exc.errors and all(e.startswith("fuzz.yaml:") for e in exc.errors)
    else:
        RuleEngine(ruleset, ZoneIndex([]))  # a valid one builds an engine


@settings(max_examples=100)
@given(st.text(max_size=200))
@example("*0")  # an alias with no anchor (found by this test)
@example("rules: &x [*x]")  # an alias inside the node it names
def test_any_text_is_refused_or_accepted_never_crashes(text: str) -> None:
    try:
        parse_ruleset(text, Path("fuzz.yaml"))
    except RuleSetError as exc:
        assert exc.errors


def test_sf_high_risk_violations_by_neighbourhood(shared_data: Path, tmp_path: Path) -> None:
    import pandas as pd
    from shapely.geometry import Point, shape

    feed = {"name": "sf-violations", "domain": "food_safety", "kind": "food_violation.found",
            "path": str(shared_data / "food_safety/sf_violations_plus.csv"),
            "join": {"path": str(shared_data / "food_safety/sf_businesses.csv"),
                     "key": "business_id", "encoding": "latin-1"},
            "record_id": ["business_id", "date", "ViolationTypeID"],
            "entity_id": "business_id",
            "time": {"field": "date", "format": "%Y%m%d", "timezone": "America/Los_Angeles"},
            "geometry": {"lon": "longitude", "lat": "latitude", "optional": True},
            "attributes": {"risk_category": {"field": "risk_category", "type": "str"}}}
    (tmp_path / "violations.yaml").write_text(yaml.safe_dump(feed))
    rules = {"zones": [{"layer": "sf", "path": str(shared_data /
                                                  "boundaries/san-francisco.geojson")}],
             "rules": [{"id": "high-risk", "domain": "food_safety",
                        "condition": {"type": "all", "conditions": [
                            {"type": "match", "attribute": "risk_category",
                             "values": ["High Risk"]},
                            {"type": "in_zone", "layer": "sf"}]},
                        "alert": {"severity": "Moderate", "category": "Health",
                                  "message": "High Risk violation in {zone}"}}]}
    engine = RuleEngine.from_ruleset(RuleSet.model_validate(rules))
    events = [e for e in FileSource(load_feed(tmp_path / "violations.yaml")).run()
              if isinstance(e, Envelope)]
    alerts = {a.id: a for a in engine.evaluate(events)}.values()  # one per violation record
    got = pd.Series([a.zone_name for a in alerts]).value_counts().to_dict()

    violations = pd.read_csv(shared_data / "food_safety/sf_violations_plus.csv", dtype=str)
    businesses = pd.read_csv(shared_data / "food_safety/sf_businesses.csv", dtype=str,
                             encoding="latin-1")
    high = violations[violations["risk_category"] == "High Risk"].merge(
        businesses, on="business_id", how="left").dropna(subset=["latitude", "longitude"])
    # one alert per source record (the record id); repeated rows of one record are one
    high = high.drop_duplicates(["business_id", "date", "ViolationTypeID"])
    hoods = json.loads((shared_data / "boundaries/san-francisco.geojson").read_text())
    polys = [(f["properties"]["name"], shape(f["geometry"]).buffer(0))
             for f in hoods["features"]]
    names = [next((n for n, p in polys if p.intersects(Point(float(r.longitude),
                                                             float(r.latitude)))), None)
             for r in high.itertuples()]
    expected = pd.Series([n for n in names if n]).value_counts().to_dict()
    assert got == expected
    assert sum(expected.values()) > 1000
