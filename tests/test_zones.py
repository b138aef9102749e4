"""Zone lookup on real boundaries, checked against an independent per-point test."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from shapely.geometry import Point, shape

from citywatch.geo.zones import ZoneIndex, ZoneLayer


def test_epa_sites_in_nyc_boroughs_match_shapely(shared_data) -> None:
    boroughs = shared_data / "boundaries/new-york-city-boroughs.geojson"
    with (shared_data / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv").open() as fh:
        sites = {r["Site ID"]: (float(r["SITE_LONGITUDE"]), float(r["SITE_LATITUDE"]))
                 for r in csv.DictReader(fh)}
    layer = ZoneLayer.from_file("nyc", boroughs)
    lons = np.array([p[0] for p in sites.values()])
    lats = np.array([p[1] for p in sites.values()])
    index = ZoneIndex([layer])
    found = index.lookup(lons, lats)["nyc"]
    # looked up again, with new places among them: remembered places answer the same
    again = index.lookup(np.concatenate([lons[::-1], [-73.95, np.nan]]),
                         np.concatenate([lats[::-1], [40.65, np.nan]]))["nyc"]
    assert again[:-2].tolist() == found[::-1].tolist()
    assert layer.zone_names[again[-2]] == "Brooklyn" and again[-1] == -1
    assert ZoneIndex([layer], remember=0).lookup(lons, lats)["nyc"].tolist() == found.tolist()

    import json
    features = json.loads(boroughs.read_text())["features"]
    polys = [(f["properties"]["name"], shape(f["geometry"]).buffer(0)) for f in features]
    expected = [next((n for n, poly in polys if poly.intersects(Point(x, y))), None)
                for x, y in sites.values()]
    got = [layer.zone_names[z] if z >= 0 else None for z in found]
    assert got == expected
    assert sum(z is not None for z in got) == 14  # SOURCES.md: 14 of 31 sites inside


def test_points_without_location_get_no_zone(shared_data) -> None:
    layer = ZoneLayer.from_file("sf", shared_data / "boundaries/san-francisco.geojson")
    found = ZoneIndex([layer]).lookup(np.array([np.nan, -122.4194]),
                                      np.array([np.nan, 37.7749]))["sf"]
    assert found[0] == -1 and found[1] >= 0


def test_a_projected_layer_without_a_crs_is_refused_until_its_crs_is_set(
        shared_data, tmp_path) -> None:
    """The NYC boroughs in State Plane feet (EPSG:2263), written without a CRS member:
    refused with the setting to use (rules validate: exit 1, the layer named); with
    ``crs: EPSG:2263`` the EPA sites fall in the same boroughs as with the original."""
    import json
    import subprocess
    import sys

    import geopandas as gpd
    import pytest
    import yaml

    from citywatch.geo.zones import ZoneLayerError

    boroughs = shared_data / "boundaries/new-york-city-boroughs.geojson"
    projected = json.loads(gpd.read_file(boroughs).to_crs(2263).to_json(default=str))
    projected.pop("crs", None)
    path = tmp_path / "boroughs_2263.geojson"
    path.write_text(json.dumps(projected))
    with pytest.raises(ZoneLayerError, match="crs: EPSG:2263"):
        ZoneLayer.from_file("nyc", path)

    def rules(extra: dict) -> Path:
        file = tmp_path / f"rules{len(extra)}.yaml"
        file.write_text(yaml.safe_dump({
            "zones": [{"layer": "nyc", "path": path.name, **extra}],
            "rules": [{"id": "pm25-in-nyc", "domain": "environment", "condition": {
                "type": "all", "conditions": [
                    {"type": "threshold", "attribute": "pm25", "op": ">", "value": 35},
                    {"type": "in_zone", "layer": "nyc", "zones": ["Bronx"]}]},
                "alert": {"severity": "Moderate", "category": "Env",
                          "message": "PM2.5 {pm25}"}}]}))
        return file

    refused = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "rules",
                              "validate", str(rules({}))], capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 1 and "beyond longitude/latitude" in refused.stdout + \
        refused.stderr
    accepted = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "rules",
                               "validate", str(rules({"crs": "EPSG:2263"}))],
                              capture_output=True, text=True, timeout=120)
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr

    with (shared_data / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv").open() as fh:
        sites = {r["Site ID"]: (float(r["SITE_LONGITUDE"]), float(r["SITE_LATITUDE"]))
                 for r in csv.DictReader(fh)}
    lons = np.array([p[0] for p in sites.values()])
    lats = np.array([p[1] for p in sites.values()])
    original = ZoneLayer.from_file("nyc", boroughs)
    declared = ZoneLayer.from_file("nyc", path, crs="EPSG:2263")
    names = [[layer.zone_names[z] if z >= 0 else None
              for z in ZoneIndex([layer]).lookup(lons, lats)["nyc"]]
             for layer in (original, declared)]
    assert names[0] == names[1] and sum(n is not None for n in names[1]) == 14
