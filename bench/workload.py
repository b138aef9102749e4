"""The benchmark workload shared by the rule-core and pipeline benchmarks: 50 rules over
a 1,000-zone grid on New York City, fed with real EPA PM2.5 readings.

Rules mix thresholds, zone membership (any zone, 200 named zones), between and geodesic
proximity. ``alerting="typical"`` sets thresholds so ~1 % of events raise an alert (a
city feed's usual rate); ``"heavy"`` so ~23 % do (every alert costs an object, a message
and a store row, so this is the worst case).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from shapely.geometry import box, mapping

from citywatch.connectors.file import FileSource, load_feed
from citywatch.geo.zones import ZoneLayer
from citywatch.ops.settings import DEMO_DIR
from citywatch.rules.model import RuleSet
from citywatch.streams.envelope import Envelope, make_envelope

SHIFT = {"typical": 6.0, "heavy": 0.0}


def grid() -> ZoneLayer:
    lons = np.linspace(-74.26, -73.70, 41)
    lats = np.linspace(40.49, 40.92, 26)
    cells = [box(lons[i], lats[j], lons[i + 1], lats[j + 1])
             for i in range(40) for j in range(25)]
    return ZoneLayer.from_geometries("grid", [f"cell-{k}" for k in range(len(cells))], cells)


def write_grid(path: Path) -> Path:
    layer = grid()
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"name": name}, "geometry": mapping(geom)}
        for name, geom in zip(layer.zone_names, layer.geometries, strict=True)]}))
    return path


def rules(alerting: str = "typical", grid_path: str = "grid.geojson") -> RuleSet:
    up = SHIFT[alerting]
    alert = {"severity": "Minor", "category": "Env", "message": "{pm25} at {zone}"}
    out = []
    for k in range(50):
        kind = k % 5
        if kind == 0:
            cond = {"type": "threshold", "attribute": "pm25", "op": ">",
                    "value": 20 + up + k / 10}
        elif kind == 1:
            cond = {"type": "all", "conditions": [
                {"type": "threshold", "attribute": "pm25", "op": ">=",
                 "value": 18 + up + k / 10},
                {"type": "in_zone", "layer": "grid"}]}
        elif kind == 2:
            cond = {"type": "all", "conditions": [
                {"type": "in_zone", "layer": "grid",
                 "zones": [f"cell-{c}" for c in range(k * 10, k * 10 + 200)]},
                {"type": "threshold", "attribute": "pm25", "op": ">", "value": 24 + up}]}
        elif kind == 3:
            cond = {"type": "threshold", "attribute": "pm25", "op": "between",
                    "range": [25 + up + k / 20, 27 + up + k / 20]}
        else:
            cond = {"type": "all", "conditions": [
                {"type": "proximity", "point": [-73.95, 40.75], "within_m": 2000 + 300 * k},
                {"type": "threshold", "attribute": "pm25", "op": ">", "value": 24 + up}]}
        out.append({"id": f"rule-{k}", "domain": "environment", "condition": cond,
                    "alert": {**alert, "zone_layer": "grid"} if kind in (1, 2) else alert})
    return RuleSet.model_validate({"zones": [{"layer": "grid", "path": grid_path}],
                                   "rules": out})


def events(total: int) -> list[Envelope]:
    """Real EPA readings repeated with distinct record ids up to ``total``."""
    base = [e for e in FileSource(load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")).run()
            if isinstance(e, Envelope)]
    return [make_envelope(source=e.source, source_record_id=f"{e.id}/{i}", domain=e.domain,
                          kind=e.kind, time=e.time, entity_id=e.entity_id,
                          geometry=e.geometry, attributes=e.attributes)
            for i, e in ((i, base[i % len(base)]) for i in range(total))]
