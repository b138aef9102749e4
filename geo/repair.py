"""Invalid polygons in a GeoJSON zone file made valid once, ahead of time, so the file
loads without the repair warning (:meth:`citywatch.geo.zones.ZoneLayer.from_file` would
otherwise repair them the same way at every load, and say so).

The repair is Shapely's ``make_valid`` with the ``structure`` method, dropping collapsed
parts: a self-intersecting ring becomes the polygon(s) it encloses. Properties and valid
features are kept as they are. The bundled demo zones are made with::

    python -m citywatch.geo.repair ../shared/data/boundaries/san-francisco.geojson \\
        ops/demo/zones/san-francisco.geojson

Example:
    >>> bow_tie = {"type": "Polygon", "coordinates": [[[0, 0], [2, 2], [2, 0], [0, 2],
    ...                                                 [0, 0]]]}
    >>> fixed, names = repaired({"type": "FeatureCollection", "features": [
    ...     {"type": "Feature", "properties": {"name": "bow"}, "geometry": bow_tie}]})
    >>> names, fixed["features"][0]["geometry"]["type"]
    (['bow'], 'MultiPolygon')
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import mapping, shape


def repaired(collection: dict[str, Any], name_field: str = "name",
             ) -> tuple[dict[str, Any], list[str]]:
    """The feature collection with each invalid geometry made valid, and the names of
    the features repaired."""
    names: list[str] = []
    features = []
    for feature in collection["features"]:
        geometry = shape(feature["geometry"])
        if not geometry.is_valid:
            geometry = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
            feature = {**feature, "geometry": mapping(geometry)}
            names.append(str(feature.get("properties", {}).get(name_field)))
        features.append(feature)
    return {**collection, "features": features}, names


def main(argv: list[str]) -> int:
    """``python -m citywatch.geo.repair SOURCE TARGET``: write the repaired file."""
    if len(argv) != 2:
        print("usage: python -m citywatch.geo.repair SOURCE.geojson TARGET.geojson",
              file=sys.stderr)
        return 2
    source, target = map(Path, argv)
    fixed, names = repaired(json.loads(source.read_text(encoding="utf-8")))
    target.write_text(json.dumps(fixed, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{target}: repaired {len(names)} polygon(s): {', '.join(names) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
