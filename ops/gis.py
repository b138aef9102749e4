"""Incidents as GIS layers: a GeoJSON FeatureCollection (RFC 7946, lon/lat WGS 84) and
files QGIS or ArcGIS open (GeoJSON, GeoPackage through GeoPandas/pyogrio, CSV with
lon/lat columns). Each incident is a point at its place (no geometry when it has none),
with severity, status, times, zone and counts as properties.

Example:
    >>> from datetime import UTC, datetime
    >>> row = {"id": "i1", "rule_id": "r", "domain": "air", "category": "Env",
    ...        "title": "PM2.5", "severity": "Severe", "status": "new", "lon": -73.9,
    ...        "lat": 40.7, "first_seen": datetime(2024, 1, 1, tzinfo=UTC)}
    >>> layer = incident_features([row])
    >>> layer["features"][0]["geometry"], layer["features"][0]["properties"]["first_seen"]
    ({'type': 'Point', 'coordinates': [-73.9, 40.7]}, '2024-01-01T00:00:00+00:00')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

PROPERTIES = ("id", "rule_id", "domain", "category", "title", "severity", "status",
              "zone_layer", "zone_id", "zone_name", "first_seen", "last_seen",
              "alert_count", "assignee", "team", "acknowledged_at", "resolved_at")
Format = Literal["geojson", "gpkg", "csv"]
FORMATS: tuple[str, ...] = ("geojson", "gpkg", "csv")


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def incident_features(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of incident rows (mappings with the store's columns)."""
    features = []
    for row in rows:
        lon, lat = row.get("lon"), row.get("lat")
        features.append({
            "type": "Feature", "id": row["id"],
            "geometry": {"type": "Point", "coordinates": [lon, lat]}
            if lon is not None and lat is not None else None,
            "properties": {k: _plain(row.get(k)) for k in PROPERTIES}})
    return {"type": "FeatureCollection", "features": features}


def write_incidents(rows: Sequence[Mapping[str, Any]], path: Path, fmt: Format) -> int:
    """Write the incidents as a layer named ``incidents``; returns how many."""
    import geopandas as gpd
    import pandas as pd

    layer = incident_features(rows)
    if fmt == "csv":
        frame = pd.DataFrame([{**f["properties"],
                               "lon": (f["geometry"] or {}).get("coordinates", [None])[0],
                               "lat": ((f["geometry"] or {}).get("coordinates")
                                       or [None, None])[1]}
                              for f in layer["features"]],
                             columns=[*PROPERTIES, "lon", "lat"])
        frame.to_csv(path, index=False)
        return len(frame)
    frame = gpd.GeoDataFrame.from_features(layer["features"], crs="EPSG:4326",
                                           columns=["geometry", *PROPERTIES])
    for column in ("first_seen", "last_seen", "acknowledged_at", "resolved_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    frame.to_file(path, driver="GeoJSON" if fmt == "geojson" else "GPKG",
                  layer="incidents", engine="pyogrio")
    return len(frame)
