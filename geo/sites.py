"""Site layers (schools, hospitals, stations…) and vectorised geodesic proximity.

Distances are geodesic on the WGS84 ellipsoid (pyproj ``Geod``), in metres. Candidate
pairs come from an STRtree query with a conservative radius in degrees; only those pairs
get an exact distance.

Example:
    >>> import numpy as np
    >>> lon, lat = np.array([-122.42, -118.24]), np.array([37.77, 34.05])
    >>> d = distances_to_point(lon, lat, (-122.4194, 37.7749))
    >>> [round(x / 1000) for x in d]
    [1, 559]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray

from citywatch.geo.zones import WGS84, ZoneLayerError, in_lonlat

METRES_PER_DEGREE = 111_320.0


def distances_to_point(lons: NDArray[np.float64], lats: NDArray[np.float64],
                       point: tuple[float, float]) -> NDArray[np.float64]:
    """Geodesic distance (m) from each location to ``point``; NaN where unknown."""
    out = np.full(len(lons), np.nan)
    known = ~(np.isnan(lons) | np.isnan(lats))
    if known.any():
        n = int(known.sum())
        _, _, dist = WGS84.inv(lons[known], lats[known], np.full(n, point[0]),
                               np.full(n, point[1]))
        out[known] = dist
    return out


@dataclass
class SiteLayer:
    """Named sites, each reduced to a representative point, in EPSG:4326."""

    name: str
    site_names: list[str]
    lons: NDArray[np.float64]
    lats: NDArray[np.float64]
    tree: shapely.STRtree = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.tree = shapely.STRtree(shapely.points(self.lons, self.lats))

    @classmethod
    def from_file(cls, name: str, path: Path, *, name_field: str = "name",
                  crs: str | None = None) -> SiteLayer:
        try:
            frame = gpd.read_file(path)
        except Exception as exc:  # pyogrio raises several types; all mean "unusable file"
            raise ZoneLayerError(f"{path}: cannot read site layer: {exc}") from exc
        if name_field not in frame.columns:
            raise ZoneLayerError(f"{path}: no '{name_field}' property")
        frame = in_lonlat(frame, path, crs)
        points = frame.geometry.representative_point()
        return cls(name, [str(v) for v in frame[name_field]], points.x.to_numpy(),
                   points.y.to_numpy())

    def nearest_within(self, lons: NDArray[np.float64], lats: NDArray[np.float64],
                       within_m: float) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Per location, the nearest site within ``within_m`` (index, metres), else
        (-1, NaN)."""
        index = np.full(len(lons), -1, dtype=np.int64)
        best = np.full(len(lons), np.nan)
        if not len(lons) or not len(self.site_names):
            return index, best
        widest = np.nanmax(np.abs(np.concatenate([lats, self.lats])), initial=0.0)
        reach = within_m / METRES_PER_DEGREE
        cos = np.cos(np.radians(min(89.9, widest + reach)))
        radius = reach / max(cos, 1e-3)
        loc, site = self.tree.query(shapely.points(lons, lats), predicate="dwithin",
                                    distance=radius)
        if not len(loc):
            return index, best
        _, _, dist = WGS84.inv(lons[loc], lats[loc], self.lons[site], self.lats[site])
        close = dist <= within_m
        loc, site, dist = loc[close], site[close], dist[close]
        order = np.lexsort((dist, loc))  # per location, nearest first
        loc, site, dist = loc[order], site[order], dist[order]
        first = np.unique(loc, return_index=True)[1]
        index[loc[first]] = site[first]
        best[loc[first]] = dist[first]
        return index, best
