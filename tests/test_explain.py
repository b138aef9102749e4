"""`citywatch explain` and `GET /alerts/{id}/explain`: for a threshold, a window, a
proximity and a forecast alert raised from real files, the answer names the source
record's file:line, the rule version and who approved it, and the values compared; the
PROV output validates against the shipped PROV-JSON schema.

Fixtures written here: a zone covering the world and two site points (San Francisco and
Anchorage city halls, coordinates rounded), to give windows and proximity a layer."""

from __future__ import annotations

import json
import shutil
import warnings
from datetime import datetime
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from citywatch.connectors.file import FileSource, load_feed
from citywatch.forecasts.grid import ForecastBook
from citywatch.forecasts.training import SeriesSpec, TrainedModel, train_series
from citywatch.ops.cli import app
from citywatch.ops.explain import PROV_JSON_SCHEMA, as_prov, explain_alert
from citywatch.ops.settings import DEMO_DIR, Settings
from citywatch.ops.store.forecast_models import ModelRegistry
from citywatch.ops.store.rulesets import RuleSetBook
from citywatch.ops.store.sink import StoreSink
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.tokens import TokenBook
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import load_ruleset
from citywatch.streams.envelope import Envelope

CUTOFF = datetime(2018, 9, 17, 0, 0)
ALERT = {"severity": "Moderate", "category": "Geo"}
RULES = [
    {"id": "quake-strong", "domain": "disaster",
     "condition": {"type": "threshold", "attribute": "mag", "op": ">=", "value": 4.5},
     "alert": {**ALERT, "message": "M{mag} {place}"}},
    {"id": "quake-day", "domain": "disaster",
     "condition": {"type": "window", "attribute": "mag", "aggregate": "count", "size": "1d",
                   "group_by": "zone:world", "op": ">=", "value": 50,
                   "where": {"type": "threshold", "attribute": "mag", "op": ">=",
                             "value": 1.0}},
     "alert": {**ALERT, "message": "{value} quakes in a day"}},
    {"id": "quake-near-city", "domain": "disaster",
     "condition": {"type": "proximity", "within_m": 100_000, "sites": "cities"},
     "alert": {**ALERT, "message": "M{mag} {distance_km} km from {site}"}},
    {"id": "i94-congestion-ahead", "domain": "traffic",
     "condition": {"type": "forecast_exceedance", "series": "i94:volume", "op": ">",
                   "value": 6000, "horizon": "6h", "bound": "yhat"},
     "alert": {"severity": "Moderate", "category": "Transport",
               "message": "{forecast} veh/h expected at {expected_at}"}},
]


@pytest.fixture(scope="module")
def trained(shared_data: Path) -> TrainedModel:
    return train_series(SeriesSpec(
        key="i94:volume", csv=str(shared_data / "traffic/Metro_Interstate_Traffic_Volume.csv"),
        time=["date_time"], value="traffic_volume", holiday_column="holiday", until=CUTOFF,
        timezone="America/Chicago", folds=4, grid_steps=48))


def rule_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "world.geojson").write_text(json.dumps({
        "type": "FeatureCollection", "features": [{
            "type": "Feature", "properties": {"name": "World"}, "geometry": {
                "type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90],
                                                    [-180, 90], [-180, -90]]]}}]}))
    (folder / "cities.geojson").write_text(json.dumps({
        "type": "FeatureCollection", "features": [
            {"type": "Feature", "properties": {"name": "San Francisco City Hall"},
             "geometry": {"type": "Point", "coordinates": [-122.419, 37.779]}},
            {"type": "Feature", "properties": {"name": "Anchorage City Hall"},
             "geometry": {"type": "Point", "coordinates": [-149.892, 61.217]}}]}))
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({
        "zones": [{"layer": "world", "path": "world.geojson"}],
        "sites": [{"layer": "cities", "path": "cities.geojson"}], "rules": RULES}))
    return path


@pytest.fixture
def explained_store(store: IncidentStore, shared_data: Path, trained: TrainedModel,
                    tmp_path: Path) -> tuple[IncidentStore, Path]:
    """The rule set proposed by ana and approved by bob; alerts raised from the USGS
    week and the I-94 file by the engine, stored by the worker's sink."""
    tokens = TokenBook(store)
    tokens.issue("ana", "analyst")
    tokens.issue("bob", "admin")
    path = rule_file(tmp_path / "rules")
    book = RuleSetBook(store)
    proposal = book.propose(path, actor="ana")
    book.approve(proposal.version, actor="bob")
    ModelRegistry(store).save(trained)
    forecasts = ForecastBook()
    forecasts.refresh(ModelRegistry(store).newest_grids())
    engine = RuleEngine.from_ruleset(load_ruleset(path), forecasts=forecasts)
    quakes = shared_data / "disasters/usgs_all_week.geojson"
    shutil.copy(quakes, tmp_path / "usgs_all_week.geojson")
    usgs = load_feed(DEMO_DIR / "feeds/usgs_earthquakes.yaml")
    events = sorted((e for e in FileSource(usgs, path=tmp_path / "usgs_all_week.geojson").run()
                     if isinstance(e, Envelope)), key=lambda e: e.time)
    i94 = load_feed(DEMO_DIR / "feeds/i94_traffic.yaml")
    start = pd.Timestamp(CUTOFF, tz="America/Chicago")
    traffic = [e for e in FileSource(i94).run() if isinstance(e, Envelope)
               and start < e.time <= start + pd.Timedelta(hours=47)]
    alerts = [a for n in range(0, len(events), 200) for a in engine.evaluate(events[n:n + 200])]
    alerts += [a for n in range(0, len(traffic), 6) for a in engine.evaluate(traffic[n:n + 6])]
    alerts += engine.flush()
    StoreSink(store).add_new_alerts(alerts)
    return store, path


def _one(store: IncidentStore, rule_id: str) -> str:
    from sqlalchemy import select

    from citywatch.ops.store.schema import AlertRow

    with store.engine.connect() as conn:
        found = conn.execute(select(AlertRow.id).where(AlertRow.rule_id == rule_id)
                             .order_by(AlertRow.id).limit(1)).scalar()
    assert found is not None, f"no {rule_id} alert"
    return found


@pytest.mark.parametrize("rule_id", [r["id"] for r in RULES])
def test_explain_names_file_line_version_approver_and_compared_values(
        explained_store: tuple[IncidentStore, Path], rule_id: str) -> None:
    store, path = explained_store
    alert_id = _one(store, rule_id)
    explained = explain_alert(store, alert_id, configured=None)
    assert explained is not None
    rule = explained["rule"]
    assert rule["version"] == next(r.version for r in load_ruleset(path).rules
                                   if r.id == rule_id)
    assert rule["rule_set_version"] == load_ruleset(path).version
    assert (rule["proposed_by"], rule["approved_by"]) == ("ana", "bob")
    assert f"id: {rule_id}" in rule["text"]
    feed_file = "i94_traffic_2018_tail.csv" if rule_id.startswith("i94") else (
        "usgs_all_week.geojson")
    origins = [s["origin"] for s in explained["sources"] if s["origin"]]
    # a CSV row as file:line, a GeoJSON feature as file#features[index]
    assert origins and all(o.startswith((f"{feed_file}:", f"{feed_file}#features["))
                           for o in origins), origins
    if rule_id.startswith("i94"):  # the named line of the CSV holds the event's values
        line = int(origins[0].split(":")[1].split()[0])
        row = (DEMO_DIR / "data" / feed_file).read_text().splitlines()[line - 1]
        volume = explained["sources"][0]["envelope"]["attributes"]["volume"]
        assert f",{volume:g}" in row or f",{int(volume)}" in row, (row, volume)
    compared = explained["compared"][0]
    assert compared["holds"] is True, compared
    if rule_id == "quake-day":
        assert compared["observed"] >= 50 and compared["count"] == compared["observed"]
    if rule_id == "quake-near-city":
        assert compared["observed_m"] <= 100_000
    if rule_id == "i94-congestion-ahead":
        assert explained["model"]["id"] and compared["observed"] > 6000
    assert explained["incident"]["audit"][0]["action"] == "alerts_added"
    schema = json.loads(PROV_JSON_SCHEMA.read_text())
    jsonschema.Draft4Validator(schema).validate(as_prov(explained))


def test_cli_and_api_explain(explained_store: tuple[IncidentStore, Path],
                             tmp_path: Path) -> None:
    store, _ = explained_store
    alert_id = _one(store, "quake-strong")
    env = {"CITYWATCH_DATABASE_URL": store.url}
    text = CliRunner().invoke(app, ["explain", alert_id], env=env)
    assert text.exit_code == 0, text.output
    assert "usgs_all_week.geojson#features[" in text.output
    assert "approved by bob" in text.output
    assert "threshold: attribute=mag" in text.output
    prov = CliRunner().invoke(app, ["explain", alert_id, "--format", "prov"], env=env)
    jsonschema.Draft4Validator(json.loads(PROV_JSON_SCHEMA.read_text())).validate(
        json.loads(prov.stdout))
    assert CliRunner().invoke(app, ["explain", "nope"], env=env).exit_code == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

        from citywatch.ops.api.app import create_api
    viewer = {"Authorization": f"Bearer {TokenBook(store).issue('vic', 'viewer')}"}
    client = TestClient(create_api(Settings(database_url=store.url, data_dir=tmp_path),
                                   store))
    got = client.get(f"/alerts/{alert_id}/explain", headers=viewer)
    assert got.status_code == 200 and got.json()["rule"]["approved_by"] == "bob"
    prov_doc = client.get(f"/alerts/{alert_id}/explain", params={"format": "prov"},
                          headers=viewer).json()
    jsonschema.Draft4Validator(json.loads(PROV_JSON_SCHEMA.read_text())).validate(prov_doc)
    assert client.get("/alerts/nope/explain", headers=viewer).status_code == 404
    assert client.get(f"/alerts/{alert_id}/explain").status_code == 401
