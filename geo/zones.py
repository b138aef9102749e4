"""Zone layers and a vectorised point-in-zone index (Shapely STRtree).

Example:
    >>> from shapely.geometry import box
    >>> layer = ZoneLayer.from_geometries("grid", ["west", "east"],
    ...                                   [box(0, 0, 1, 1), box(1, 0, 2, 1)])
    >>> index = ZoneIndex([layer])
    >>> import numpy as np
    >>> index.lookup(np.array([0.5, 1.5, 9.0]), np.array([0.5, 0.5, 9.0]))["grid"].tolist()
    [0, 1, -1]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Geod
from shapely.geometry.base import BaseGeometry

log = logging.getLogger(__name__)
WGS84 = Geod(ellps="WGS84")


class ZoneLayerError(ValueError):
    """A zone layer file that cannot be used, with the file and the reason."""


@dataclass
class ZoneLayer:
    """Named polygons of one layer (e.g. boroughs), in EPSG:4326 lon/lat."""

    name: str
    zone_ids: list[str]
    zone_names: list[str]
    geometries: NDArray[np.object_]
    tree: shapely.STRtree = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shapely.prepare(self.geometries)
        self.tree = shapely.STRtree(self.geometries)

    def __len__(self) -> int:
        return len(self.zone_ids)

    def zones_within(self, lon: float, lat: float, metres: float) -> list[int]:
        """Indices of the zones within ``metres`` (geodesic) of a point, in index order:
        a circle built on the WGS84 ellipsoid (72 bearings) intersected with the zones.

        Example:
            >>> from shapely.geometry import box
            >>> layer = ZoneLayer.from_geometries("g", ["a"], [box(0, 0, 1, 1)])
            >>> layer.zones_within(1.1, 0.5, 20_000), layer.zones_within(1.1, 0.5, 5_000)
            ([0], [])
        """
        if metres <= 0:
            hits = self.tree.query(shapely.Point(lon, lat), predicate="intersects")
            return sorted(int(h) for h in hits)
        bearings = np.linspace(0.0, 360.0, 72, endpoint=False)
        lons, lats, _ = WGS84.fwd(np.full(72, lon), np.full(72, lat), bearings,
                                  np.full(72, metres))
        circle = shapely.Polygon(np.column_stack([lons, lats]))
        return sorted(int(h) for h in self.tree.query(circle, predicate="intersects"))

    @classmethod
    def from_geometries(cls, name: str, zone_names: Sequence[str],
                        geometries: Sequence[BaseGeometry],
                        zone_ids: Sequence[str] | None = None) -> ZoneLayer:
        ids = list(zone_ids) if zone_ids is not None else list(zone_names)
        return cls(name, ids, list(zone_names), np.asarray(geometries, dtype=object))

    @classmethod
    def from_file(cls, name: str, path: Path, *, name_field: str = "name",
                  id_field: str | None = None, crs: str | None = None) -> ZoneLayer:
        """Read any GDAL vector format; reproject to EPSG:4326 (from ``crs`` when given,
        else the file's own CRS); repair invalid polygons."""
        try:
            frame = gpd.read_file(path)
        except Exception as exc:  # pyogrio raises several types; all mean "unusable file"
            raise ZoneLayerError(f"{path}: cannot read zone layer: {exc}") from exc
        if name_field not in frame.columns:
            raise ZoneLayerError(f"{path}: no '{name_field}' property (have: "
                                 f"{', '.join(c for c in frame.columns if c != 'geometry')})")
        if id_field and id_field not in frame.columns:
            raise ZoneLayerError(f"{path}: no '{id_field}' property for id_field (have: "
                                 f"{', '.join(c for c in frame.columns if c != 'geometry')})")
        frame = in_lonlat(frame, path, crs)
        invalid = ~frame.geometry.is_valid
        if invalid.any():
            log.warning("%s: repaired %d invalid polygon(s): %s", path, int(invalid.sum()),
                        ", ".join(map(str, frame.loc[invalid, name_field])))
            frame.loc[invalid, "geometry"] = frame.geometry[invalid].make_valid(
                method="structure", keep_collapsed=False)
        names = [str(v) for v in frame[name_field]]
        ids = [str(v) for v in frame[id_field]] if id_field else names
        return cls(name, ids, names, np.asarray(frame.geometry.values, dtype=object))


def in_lonlat(frame: gpd.GeoDataFrame, path: Path, crs: str | None) -> gpd.GeoDataFrame:
    """``frame`` in EPSG:4326: from ``crs`` (the layer's ``crs:`` setting, which wins),
    else from the file's CRS. Coordinates said to be longitude/latitude (no CRS, or a
    geographic one: GeoJSON readers assume WGS 84 when the file has no ``crs`` member)
    must be in range, else the file is refused with the setting to use."""
    if crs is not None:
        frame = frame.set_crs(crs, allow_override=True)
    elif frame.crs is None or frame.crs.is_geographic:
        min_x, min_y, max_x, max_y = (float(v) for v in frame.total_bounds)
        if not (-180 <= min_x <= max_x <= 180 and -90 <= min_y <= max_y <= 90):
            raise ZoneLayerError(
                f"{path}: coordinates reach ({min_x:.6g}, {min_y:.6g})..({max_x:.6g}, "
                f"{max_y:.6g}), beyond longitude/latitude, and the file declares no "
                "projected CRS: set the layer's crs (e.g. 'crs: EPSG:2263' for New York "
                "State Plane feet)")
        if frame.crs is None:
            log.warning("%s has no CRS; assuming EPSG:4326", path)
            frame = frame.set_crs(4326)
    return frame if frame.crs.to_epsg() == 4326 else frame.to_crs(4326)


class ZoneIndex:
    """Several zone layers at once; a point gets one zone (or none) in every layer.

    Lookups are vectorised: one STRtree query per layer per batch, for the places not
    looked up before. Sensors report from the same places again and again, so the zones
    of up to ``remember`` places are kept (forgotten all at once when full).
    """

    def __init__(self, layers: Sequence[ZoneLayer], *, remember: int = 200_000) -> None:
        self.layers: dict[str, ZoneLayer] = {layer.name: layer for layer in layers}
        self.remember = remember
        self._known: dict[tuple[float, float], tuple[int, ...]] = {}

    def lookup(self, lons: NDArray[np.float64],
               lats: NDArray[np.float64]) -> dict[str, NDArray[np.int64]]:
        """For each layer, the index of the zone containing each point, or -1.

        NaN coordinates (events without a location) get -1. A point on a shared border
        gets the zone with the lowest index.
        """
        if not self.layers or not self.remember or not len(lons):
            return self._query(lons, lats)
        known = self._known
        places = list(zip(lons.tolist(), lats.tolist(), strict=True))
        found = [known.get(place) for place in places]
        missing = [i for i, zones in enumerate(found) if zones is None]
        if missing:
            rows = np.array(missing, dtype=np.intp)
            queried = self._query(lons[rows], lats[rows])
            if len(known) + len(missing) > self.remember:
                known.clear()
            for i, zones in zip(missing, zip(*(z.tolist() for z in queried.values()),
                                             strict=True), strict=True):
                found[i] = zones
                lon, lat = places[i]
                if lon == lon and lat == lat:  # a NaN place is never found again: not kept
                    known[places[i]] = zones
        table = np.array(found, dtype=np.int64).reshape(len(places), len(self.layers))
        return {name: table[:, k].copy() for k, name in enumerate(self.layers)}

    def _query(self, lons: NDArray[np.float64],
               lats: NDArray[np.float64]) -> dict[str, NDArray[np.int64]]:
        points = shapely.points(lons, lats)
        result: dict[str, NDArray[np.int64]] = {}
        for name, layer in self.layers.items():
            found = np.full(len(lons), len(layer), dtype=np.int64)
            if len(lons) and len(layer):
                # bounding-box candidates from the tree, then one vectorised exact test
                # against the prepared polygons (much faster than a predicate query)
                point_idx, zone_idx = layer.tree.query(points)
                hit = shapely.intersects_xy(layer.geometries[zone_idx], lons[point_idx],
                                            lats[point_idx])
                np.minimum.at(found, point_idx[hit], zone_idx[hit])
            found[found == len(layer)] = -1
            result[name] = found
        return result
