"""Zone lookup on real boundaries, checked against an independent per-point test."""

from __future__ import annotations

import csv

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
    found = ZoneIndex([layer]).lookup(lons, lats)["nyc"]

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
