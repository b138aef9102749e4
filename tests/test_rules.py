"""Rule files and the vectorised engine on real data, against independent counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, shape

from citywatch.connectors.file import FileSource, load_feed
from citywatch.ops.settings import DEMO_DIR
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import RuleSetError, load_ruleset, parse_ruleset
from citywatch.rules.model import RuleSet
from citywatch.streams.envelope import DOMAINS, Envelope, make_envelope


@pytest.fixture(scope="module")
def demo_engine() -> RuleEngine:
    ruleset = load_ruleset(DEMO_DIR / "rules.yaml")
    return RuleEngine.from_ruleset(ruleset)


def test_validate_reports_file_line_col(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        "  - id: ok-rule\n"
        "    domain: traffic\n"
        "    condition: {type: threshold, attribute: v, op: '>>', value: 1}\n"
        "    alert: {severity: Minor, category: Transport, message: m}\n"
        "  - id: Bad Id\n"
        "    domain: weather\n"
        "    condition: {type: threshold, attribute: v, op: '>', value: 1}\n"
        "    alert: {severity: Minor, category: Transport, message: m}\n")
    with pytest.raises(RuleSetError) as err:
        load_ruleset(path)
    lines = err.value.errors
    assert any(line.startswith(f"{path}:4:") and "op" in line for line in lines), lines
    assert any(line.startswith(f"{path}:6:9:") and "id" in line for line in lines), lines
    assert any(line.startswith(f"{path}:7:13:") and "domain" in line for line in lines), lines


def test_unknown_zone_layer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RuleSetError, match="unknown zone layer 'nowhere'"):
        parse_ruleset(
            "rules:\n  - id: r\n    domain: traffic\n"
            "    condition: {type: in_zone, layer: nowhere}\n"
            "    alert: {severity: Minor, category: Transport, message: m}\n",
            tmp_path / "r.yaml")


def test_rule_version_changes_with_definition() -> None:
    base = {"id": "r", "domain": "traffic",
            "condition": {"type": "threshold", "attribute": "v", "op": ">", "value": 1},
            "alert": {"severity": "Minor", "category": "Transport", "message": "m"}}
    changed = {**base, "condition": {**base["condition"], "value": 2}}
    v1 = RuleSet.model_validate({"rules": [base]}).rules[0].version
    v2 = RuleSet.model_validate({"rules": [changed]}).rules[0].version
    assert v1 != v2
    assert v1 == RuleSet.model_validate({"rules": [dict(base)]}).rules[0].version


def test_epa_pm25_by_borough_matches_pandas(shared_data, demo_engine: RuleEngine) -> None:
    events = [e for e in FileSource(load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")).run()
              if isinstance(e, Envelope)]
    alerts = [a for a in demo_engine.evaluate(events) if a.rule_id == "pm25-high-nyc"]

    frame = pd.read_csv(shared_data / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv")
    frame = frame[frame["Date"].str[:2].isin(["01", "02", "03"])]
    boroughs = json.loads((shared_data / "boundaries/new-york-city-boroughs.geojson")
                          .read_text())["features"]
    polys = [(f["properties"]["name"], shape(f["geometry"]).buffer(0)) for f in boroughs]

    def borough(row: pd.Series) -> str | None:
        point = Point(row["SITE_LONGITUDE"], row["SITE_LATITUDE"])
        return next((name for name, poly in polys if poly.intersects(point)), None)

    frame["borough"] = frame.apply(borough, axis=1)
    hot = frame[(frame["Daily Mean PM2.5 Concentration"] > 20) & frame["borough"].notna()]
    expected = hot.drop_duplicates(["Site ID", "Date"]).groupby("borough").size().to_dict()
    got = pd.Series([a.zone_name for a in {a.id: a for a in alerts}.values()])
    assert got.value_counts().to_dict() == expected
    assert sum(expected.values()) > 0


def test_sf_low_scores_by_neighbourhood(shared_data, demo_engine: RuleEngine) -> None:
    events = [e for e in FileSource(load_feed(DEMO_DIR / "feeds/sf_inspections.yaml")).run()
              if isinstance(e, Envelope)]
    alerts = [a for a in demo_engine.evaluate(events) if a.rule_id == "sf-food-low-score"]

    ins = pd.read_csv(shared_data / "food_safety/sf_inspections_plus.csv", dtype=str)
    ins = ins[ins["date"].str.startswith("2017")].drop_duplicates(["business_id", "date", "type"])
    biz = pd.read_csv(shared_data / "food_safety/sf_businesses.csv", dtype=str,
                      encoding="latin-1")
    joined = ins.merge(biz, on="business_id", how="left")
    joined = joined[pd.to_numeric(joined["Score"], errors="coerce") < 70]
    joined = joined.dropna(subset=["latitude", "longitude"])
    hoods = json.loads((shared_data / "boundaries/san-francisco.geojson").read_text())
    polys = [(f["properties"]["name"], shape(f["geometry"]).buffer(0))
             for f in hoods["features"]]
    names = [next((n for n, p in polys
                   if p.intersects(Point(float(r.longitude), float(r.latitude)))), None)
             for r in joined.itertuples()]
    expected = pd.Series([n for n in names if n]).value_counts().to_dict()
    got = pd.Series([a.zone_name for a in {a.id: a for a in alerts}.values()])
    assert got.value_counts().to_dict() == expected


envelopes = st.builds(
    lambda i, d, attrs, lon, lat, has_geo: make_envelope(
        source="fuzz", source_record_id=str(i), domain=d, kind="air_quality.observed",
        time=datetime(2022, 1, 1, tzinfo=UTC), entity_id=f"e{i}",
        geometry={"type": "Point", "coordinates": [lon, lat]} if has_geo else None,
        attributes=attrs),
    st.integers(0, 10**6), st.sampled_from(DOMAINS),
    st.dictionaries(st.sampled_from(["pm25", "volume", "score", "mag", "tsunami", "x"]),
                    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                              st.floats(allow_nan=False, allow_infinity=False),
                              st.text(max_size=5)), max_size=4),
    st.floats(-180, 180), st.floats(-90, 90), st.booleans())


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                              HealthCheck.too_slow])
@given(st.lists(envelopes, max_size=30))
def test_evaluation_never_raises_on_valid_envelopes(demo_engine: RuleEngine,
                                                    batch: list[Envelope]) -> None:
    alerts = demo_engine.evaluate(batch)
    assert all(a.source_event_ids[0] in {e.id for e in batch} for a in alerts)
