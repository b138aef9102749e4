"""Stateful rule kinds on real data, each against a count computed independently in the
test (pandas, Shapely on the raw files), plus lateness, hysteresis and crash replay."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, shape

from citywatch.connectors.file import FileSource, load_feed
from citywatch.ops.settings import DEMO_DIR
from citywatch.rules.engine import RuleEngine
from citywatch.rules.model import RuleSet
from citywatch.rules.state import MemoryState
from citywatch.streams.alert import Alert
from citywatch.streams.envelope import DOMAINS, Envelope, make_envelope

BOROUGHS = {"layer": "nyc", "path": str(DEMO_DIR / "zones/new-york-city-boroughs.geojson")}
SF_HOODS = {"layer": "sf", "path": str(DEMO_DIR / "zones/san-francisco.geojson")}
ALERT = {"severity": "Minor", "category": "Env", "message": "{entity_id} {zone}"}
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def engine_for(rules: list[dict], zones: list[dict] | None = None,
               state: MemoryState | None = None) -> RuleEngine:
    ruleset = RuleSet.model_validate({"zones": zones or [], "rules": rules})
    return RuleEngine.from_ruleset(ruleset, state)


def frames(events: list[Envelope], size: int) -> Iterator[list[Envelope]]:
    for start in range(0, len(events), size):
        yield events[start:start + size]


def run(engine: RuleEngine, events: list[Envelope], size: int = 500) -> list[Alert]:
    alerts = [a for batch in frames(events, size) for a in engine.evaluate(batch)]
    return alerts + engine.flush()


def event(n: int, minutes: float, *, entity: str = "s1", domain: str = "environment",
          kind: str = "air_quality.observed", lonlat: tuple[float, float] | None = None,
          **attributes: float) -> Envelope:
    return make_envelope(
        source="test", source_record_id=f"{entity}-{n}", domain=domain, kind=kind,
        time=T0 + timedelta(minutes=minutes), entity_id=entity,
        geometry={"type": "Point", "coordinates": list(lonlat)} if lonlat else None,
        attributes=attributes)


@pytest.fixture(scope="module")
def epa_frame(shared_data: Path) -> pd.DataFrame:
    frame = pd.read_csv(shared_data / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv",
                        dtype={"Site ID": str})
    local = pd.to_datetime(frame["Date"], format="%m/%d/%Y")
    frame["t"] = local.dt.tz_localize("America/New_York").dt.tz_convert("UTC")
    frame["epoch"] = (frame["t"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    boroughs = json.loads((shared_data / "boundaries/new-york-city-boroughs.geojson")
                          .read_text())["features"]
    polys = [(f["properties"]["name"], shape(f["geometry"]).buffer(0)) for f in boroughs]
    sites = frame.drop_duplicates("Site ID")
    where = {row["Site ID"]: next((n for n, p in polys if p.intersects(
        Point(row["SITE_LONGITUDE"], row["SITE_LATITUDE"]))), None)
        for _, row in sites.iterrows()}
    frame["borough"] = frame["Site ID"].map(where)
    return frame


def test_weekly_borough_average_matches_pandas(epa_year: list[Envelope],
                                               epa_frame: pd.DataFrame) -> None:
    engine = engine_for([{
        "id": "pm25-week-borough", "domain": "environment",
        "condition": {"type": "window", "attribute": "pm25", "aggregate": "avg",
                      "size": "7d", "allowed_lateness": "1d", "group_by": "zone:nyc",
                      "op": ">", "value": 8.0},
        "alert": {**ALERT, "message": "avg {value} over {count} readings in {zone}"}}],
        [BOROUGHS])
    alerts = run(engine, epa_year)
    got = {(a.zone_name, a.event_time.timestamp()) for a in alerts}

    inside = epa_frame.dropna(subset=["borough"]).copy()
    inside["start"] = inside["epoch"] // 604800 * 604800
    means = inside.groupby(["borough", "start"])["Daily Mean PM2.5 Concentration"].mean()
    expected = {(b, float(s + 604800)) for (b, s), m in means.items() if m > 8.0}
    assert len(expected) > 10
    assert got == expected
    assert sum(engine.late_counts.values()) == 0
    some = next(a for a in alerts if a.zone_name == "Bronx")
    assert len(some.source_event_ids) > 1 and some.rule_version == engine.rules[0].version


def test_silent_sensors_match_gaps_in_the_file(epa_year: list[Envelope],
                                               epa_frame: pd.DataFrame) -> None:
    after = 5 * 86400
    engine = engine_for([{"id": "silent-monitor", "domain": "environment",
                          "condition": {"type": "absence", "after": "5d"},
                          "alert": {**ALERT, "message": "{entity_id} silent since "
                                                        "{last_seen}"}}])
    alerts = run(engine, epa_year)
    got = {(a.entity_id, a.event_time.timestamp()) for a in alerts}

    expected = set()
    end = epa_frame["epoch"].max()
    for site, times in epa_frame.groupby("Site ID")["epoch"]:
        seen = sorted(set(times))
        expected |= {(site, float(a + after)) for a, b in itertools.pairwise(seen)
                     if b - a > after}
        if end - seen[-1] > after:
            expected.add((site, float(seen[-1] + after)))
    assert expected and got == expected
    assert len(alerts) == len({a.id for a in alerts})


def test_pm25_persisting_three_readings(epa_year: list[Envelope],
                                        epa_frame: pd.DataFrame) -> None:
    engine = engine_for([{"id": "pm25-persisting", "domain": "environment",
                          "condition": {"type": "persistence", "count": 3, "condition": {
                              "type": "threshold", "attribute": "pm25", "op": ">",
                              "value": 12}},
                          "alert": ALERT}])
    got = len(run(engine, epa_year))

    expected = 0
    ordered = epa_frame.sort_values("epoch", kind="stable")
    for _, readings in ordered.groupby("Site ID")["Daily Mean PM2.5 Concentration"]:
        streak = 0
        for value in readings:
            streak = streak + 1 if value > 12 else 0
            expected += streak == 3
    assert expected > 0 and got == expected


def test_traffic_drop_rate_matches_pandas(shared_data: Path) -> None:
    feed = load_feed(DEMO_DIR / "feeds/i94_traffic.yaml")
    events = [e for e in FileSource(feed).run() if isinstance(e, Envelope)]
    engine = engine_for([{"id": "i94-drop", "domain": "traffic",
                          "condition": {"type": "rate_of_change", "attribute": "volume",
                                        "per": "1h", "op": "<", "value": -2000},
                          "alert": {**ALERT, "message": "{rate} veh/h per hour"}}])
    got = {a.event_time for a in run(engine, events)}

    raw = pd.read_csv(DEMO_DIR / "data/i94_traffic_2018_tail.csv")
    raw["t"] = (pd.to_datetime(raw["date_time"]).dt.tz_localize("America/Chicago")
                .dt.tz_convert("UTC"))
    expected = set()
    for prev, row in itertools.pairwise(raw.itertuples()):
        hours = (row.t - prev.t).total_seconds() / 3600
        if hours > 0 and (row.traffic_volume - prev.traffic_volume) / hours < -2000:
            expected.add(row.t.to_pydatetime())
    assert expected and got == expected


def nyc_track() -> list[tuple[str, tuple[float, float]]]:
    return [("a", (-73.97, 40.78)),    # Manhattan
            ("b", (-73.97, 40.781)),   # Manhattan again
            ("c", (-73.87, 40.73)),    # Queens
            ("d", (-73.70, 40.40)),    # the Atlantic: outside every borough
            ("e", (-73.95, 40.65)),    # Brooklyn
            ("f", (-73.95, 40.651))]   # Brooklyn again


@pytest.mark.parametrize("transition", ["enter", "exit", "inside", "outside"])
def test_geofence_sequence_matches_shapely(shared_data: Path, transition: str) -> None:
    boroughs = json.loads((shared_data / "boundaries/new-york-city-boroughs.geojson")
                          .read_text())["features"]
    polys = {f["properties"]["name"]: shape(f["geometry"]).buffer(0) for f in boroughs}
    watched = {"Manhattan", "Brooklyn"}
    track = nyc_track()
    engine = engine_for([{"id": "fence", "domain": "traffic",
                          "condition": {"type": "geofence", "layer": "nyc",
                                        "zones": sorted(watched), "event": transition},
                          "alert": {**ALERT, "message": "{transition} {geofence}"}}],
                        [BOROUGHS])
    events = [event(n, n * 5, entity="bus-7", domain="traffic", kind="vehicle.position",
                    lonlat=lonlat) for n, (_, lonlat) in enumerate(track)]
    got = [(a.event_time, a.zone_name) for batch in frames(events, 2)
           for a in engine.evaluate(batch)]

    expected, previous = [], None
    for n, (_, lonlat) in enumerate(track):
        now = next((name for name, p in polys.items()
                    if name in watched and p.contains(Point(lonlat))), None)
        when = T0 + timedelta(minutes=n * 5)
        if transition == "inside" and now:
            expected.append((when, now))
        elif transition == "outside" and not now:  # filed under the borough it is in
            expected.append((when, next((name for name, p in polys.items()
                                         if p.contains(Point(lonlat))), None)))
        elif transition == "enter" and n and now and now != previous:
            expected.append((when, now))
        elif transition == "exit" and n and previous and now != previous:
            expected.append((when, previous))
        previous = now
    assert expected and got == expected


def test_window_lateness_within_and_beyond() -> None:
    engine = engine_for([{"id": "hourly-avg", "domain": "environment",
                          "condition": {"type": "window", "attribute": "pm25",
                                        "aggregate": "avg", "size": "1h",
                                        "allowed_lateness": "10m", "op": ">=", "value": 0},
                          "alert": {**ALERT, "message": "{value} from {count}"}}])
    stream = [(0, 10, 10.0), (1, 50, 20.0), (2, 65, 99.0), (3, 55, 30.0),   # 3: late, kept
              (4, 72, 1.0), (5, 58, 500.0), (6, 150, 2.0)]                 # 5: too late
    events = [event(n, m, pm25=v) for n, m, v in stream]  # T0 is on the hour
    result = []
    for e in events:
        result.append(engine.process([e]))
        result[-1].commit_state()
    alerts = [a for r in result for a in r.alerts] + engine.flush()
    first = min(alerts, key=lambda a: a.event_time)
    assert first.attributes["count"] == 3 and first.attributes["value"] == 20.0
    late = [item for r in result for item in r.late]
    assert [(e.id, rule) for e, rule, _ in late] == [(events[5].id, "hourly-avg")]
    assert "allowed_lateness" in late[0][2]
    assert engine.late_counts == {"hourly-avg": 1}


def test_sliding_window_counts_each_event_in_every_window() -> None:
    engine = engine_for([{"id": "busy", "domain": "environment",
                          "condition": {"type": "window", "attribute": "pm25",
                                        "aggregate": "count", "size": "30m",
                                        "slide": "10m", "op": ">=", "value": 1},
                          "alert": ALERT}])
    alerts = run(engine, [event(0, 0, pm25=1.0)])
    assert len(alerts) == 3  # the three 30-minute windows holding minute 0


def test_hysteresis_band_cooldown_and_dedupe_key() -> None:
    rule = {"id": "pm25-band", "domain": "environment",
            "condition": {"type": "threshold", "attribute": "pm25", "op": ">", "value": 35},
            "alert": {**ALERT, "clear_when": {"type": "threshold", "attribute": "pm25",
                                              "op": "<", "value": 25}}}
    values = [40, 45, 30, 50, 20, 60, 61]  # alert, held, in band, held, clear, alert, held
    engine = engine_for([rule])
    got = [a.attributes["pm25"] for a in
           run(engine, [event(n, n * 10, pm25=v) for n, v in enumerate(values)], 3)]
    assert got == [40, 60]

    cooled = engine_for([{**rule, "alert": {**ALERT, "cooldown": "30m",
                                            "dedupe_key": "{site}"}}])
    readings = [event(n, n * 10, entity=f"m{n % 2}", pm25=40.0, site=1.0)
                for n in range(8)]
    # two monitors, one site: one alert per 30 minutes for the site
    assert [a.event_time.minute for a in run(cooled, readings)] == [0, 30, 0]


def test_correlate_quake_near_zone_with_traffic_drop(shared_data: Path) -> None:
    engine = engine_for([{
        "id": "quake-traffic", "domain": "disaster",
        "condition": {"type": "correlate", "layer": "sf", "within": "1h",
                      "first": {"domain": "disaster", "near_m": 50_000, "condition": {
                          "type": "threshold", "attribute": "mag", "op": ">=", "value": 4}},
                      "second": {"domain": "traffic", "condition": {
                          "type": "threshold", "attribute": "volume_change", "op": "<",
                          "value": -0.3}}},
        "alert": {**ALERT, "message": "{first_kind} then {second_kind} in {zone}"}}],
        [SF_HOODS])
    quake = event(0, 0, entity="nc-quake", domain="disaster", kind="earthquake",
                  lonlat=(-122.25, 37.55), mag=4.2)         # ~30 km south of the city
    drop = event(1, 20, entity="sensor-9", domain="traffic", kind="traffic.volume",
                 lonlat=(-122.4194, 37.7749), volume_change=-0.5)
    far_drop = event(2, 200, entity="sensor-9", domain="traffic", kind="traffic.volume",
                     lonlat=(-122.4194, 37.7749), volume_change=-0.5)
    alerts = run(engine, [quake, drop, far_drop], size=1)
    assert len(alerts) == 1
    assert set(alerts[0].source_event_ids) == {quake.id, drop.id}
    hoods = json.loads((shared_data / "boundaries/san-francisco.geojson").read_text())
    assert alerts[0].zone_name == next(
        f["properties"]["name"] for f in hoods["features"]
        if shape(f["geometry"]).buffer(0).contains(Point(-122.4194, 37.7749)))


def test_crash_replay_gives_the_same_alerts(epa_year: list[Envelope]) -> None:
    """A worker that dies after updating state but before committing its offset reads
    the last frames again at the same positions: state is not applied twice."""
    rules = [{"id": "week", "domain": "environment",
              "condition": {"type": "window", "attribute": "pm25", "aggregate": "max",
                            "size": "7d", "allowed_lateness": "1d", "op": ">", "value": 15},
              "alert": ALERT},
             {"id": "silent", "domain": "environment",
              "condition": {"type": "absence", "after": "5d"}, "alert": ALERT},
             {"id": "band", "domain": "environment",
              "condition": {"type": "threshold", "attribute": "pm25", "op": ">",
                            "value": 20}, "alert": {**ALERT, "until_clear": True}}]
    batches = list(frames(epa_year, 300))
    clean = engine_for(rules)

    def alerts(engine: RuleEngine, numbered: list[tuple[int, list[Envelope]]]) -> set[str]:
        ids = set()
        for n, batch in numbered:
            result = engine.process(batch, n)
            ids |= {a.id for a in result.alerts}
            result.commit_state()
        return ids

    expected = alerts(clean, list(enumerate(batches)))
    store = MemoryState()
    got = alerts(engine_for(rules, state=store), list(enumerate(batches))[:20])
    restarted = engine_for(rules, state=store)  # offsets committed up to frame 16 only
    got |= alerts(restarted, list(enumerate(batches))[17:])
    assert got == expected and len(expected) > 50


STATEFUL_RULES = [
    {"id": "w", "domain": "environment",
     "condition": {"type": "window", "attribute": "pm25", "aggregate": "p95", "size": "1h",
                   "slide": "30m", "group_by": "zone:nyc", "op": ">", "value": 5}},
    {"id": "r", "domain": "traffic", "condition": {"type": "rate_of_change",
                                                   "attribute": "volume", "op": ">",
                                                   "value": 1}},
    {"id": "p", "domain": "environment", "condition": {"type": "persistence",
                                                       "duration": "10m", "condition": {
                                                           "type": "in_zone",
                                                           "layer": "nyc"}}},
    {"id": "a", "domain": "disaster", "condition": {"type": "absence", "after": "20m"}},
    {"id": "g", "domain": "traffic", "condition": {"type": "geofence", "layer": "nyc",
                                                   "event": "exit"}},
    {"id": "c", "domain": "disaster", "condition": {
        "type": "correlate", "layer": "nyc", "within": "30m",
        "first": {"domain": "disaster", "near_m": 1000}, "second": {"domain": "traffic"}}},
]
fuzz_events = st.builds(
    lambda n, d, minutes, entity, attrs, lon, lat, geo: make_envelope(
        source="fuzz", source_record_id=str(n), domain=d, kind="k",
        time=T0 + timedelta(minutes=minutes), entity_id=entity,
        geometry={"type": "Point", "coordinates": [lon, lat]} if geo else None,
        attributes=attrs),
    st.integers(0, 10**6), st.sampled_from(DOMAINS), st.integers(-600, 600),
    st.sampled_from(["e1", "e2", "e3"]),
    st.dictionaries(st.sampled_from(["pm25", "volume"]),
                    st.one_of(st.none(), st.booleans(), st.floats(-1e6, 1e6),
                              st.text(max_size=3)), max_size=2),
    st.floats(-74.1, -73.7), st.floats(40.5, 40.9), st.booleans())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(fuzz_events, max_size=12), max_size=5))
def test_stateful_evaluation_never_raises(batches: list[list[Envelope]]) -> None:
    engine = engine_for([{**r, "alert": {**ALERT, "cooldown": "5m"}} for r in
                         STATEFUL_RULES], [BOROUGHS])
    ids = {e.id for batch in batches for e in batch}
    alerts = [a for batch in batches for a in engine.evaluate(batch)] + engine.flush()
    assert all(set(a.source_event_ids) <= ids for a in alerts)


def test_events_framed_again_by_ingest_are_applied_once(epa_year: list[Envelope]) -> None:
    """After a crash, ingest re-reads raw records and frames them again at new positions;
    their raw offsets tell stateful rules they were already applied."""
    rule = {"id": "busy-week", "domain": "environment",
            "condition": {"type": "window", "attribute": "pm25", "aggregate": "count",
                          "size": "7d", "allowed_lateness": "1d", "op": ">=", "value": 1},
            "alert": {**ALERT, "message": "{count}"}}
    events = epa_year[:3000]
    origins = ["raw.environment/0"] * len(events)

    def run_frames(engine: RuleEngine, cuts: list[tuple[int, int]], first: int) -> list[Alert]:
        alerts = []
        for n, (a, b) in enumerate(cuts):
            result = engine.process(events[a:b], first + n, (origins[a:b], list(range(a, b))))
            alerts += result.alerts
            result.commit_state()
        return alerts

    clean = run_frames(engine_for([rule]), [(0, 1000), (1000, 2000), (2000, 3000)], 0)
    store = MemoryState()
    crashed = engine_for([rule], state=store)
    again = run_frames(crashed, [(0, 1000), (1000, 2000)], 0)
    again += run_frames(crashed, [(500, 1500), (1500, 2500), (2500, 3000)], 2)  # re-framed
    counts = {a.id: a.attributes["count"] for a in clean}
    assert {a.id: a.attributes["count"] for a in again} == counts


def test_a_window_alert_carries_the_aggregate_under_its_own_name(shared_data: Path,
                                                                tmp_path: Path) -> None:
    """A daily count of USGS quakes (M >= 2.5) over one zone covering the world (a
    fixture written here): each alert's ``value`` and ``count`` equal pandas' count for
    that UTC day, under ``value``/``aggregate``/``attribute``, never as ``mag``."""
    world = tmp_path / "world.geojson"
    world.write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "properties": {"name": "World"}, "geometry": {
            "type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90],
                                                [-180, 90], [-180, -90]]]}}]}))
    feed = load_feed(DEMO_DIR / "feeds/usgs_earthquakes.yaml")
    quakes = sorted((e for e in FileSource(
        feed, path=shared_data / "disasters/usgs_all_week.geojson").run()
        if isinstance(e, Envelope)), key=lambda e: e.time)
    rule = {"id": "quake-day", "domain": "disaster",
            "condition": {"type": "window", "attribute": "mag", "aggregate": "count",
                          "size": "1d", "group_by": "zone:world", "op": ">=", "value": 1,
                          "where": {"type": "threshold", "attribute": "mag", "op": ">=",
                                    "value": 2.5}},
            "alert": {**ALERT, "message": "{value} quakes ({aggregate} of {attribute})"}}
    alerts = run(engine_for([rule], [{"layer": "world", "path": str(world)}]), quakes)
    mags = pd.DataFrame({"day": [e.time.date().isoformat() for e in quakes],
                         "mag": [e.attributes.get("mag") for e in quakes]})
    expected = mags[mags.mag >= 2.5].groupby("day").size().to_dict()
    got = {a.attributes["window_start"][:10]: a.attributes for a in alerts}
    assert {day: a["count"] for day, a in got.items()} == expected
    assert len(expected) >= 7 and max(expected.values()) > 20
    for attributes in got.values():
        assert attributes["value"] == attributes["count"]
        assert (attributes["aggregate"], attributes["attribute"]) == ("count", "mag")
        assert "mag" not in attributes
