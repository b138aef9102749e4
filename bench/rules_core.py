"""Benchmark (a) of the rules issue: the rule core outside Faust — 50 rules over 1,000
zones, vectorised per micro-batch, in events/s on one core.

Zones: a 40 × 25 grid over New York City (1,000 polygons). Events: real EPA PM2.5
readings from the demo slice, repeated with distinct ids to fill the batches. Rules:
thresholds, zone membership (any zone, named zones), between and proximity, all over the
same events, so every rule does real work; thresholds are set so that alerts stay rare
(a few per hundred events), as in a real city feed.

Usage: python bench/rules_core.py [--events 200000] [--batch 500]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from shapely.geometry import box

from citywatch.connectors.file import FileSource, load_feed
from citywatch.geo.zones import ZoneIndex, ZoneLayer
from citywatch.ops.settings import DEMO_DIR
from citywatch.rules.engine import RuleEngine
from citywatch.rules.model import RuleSet
from citywatch.streams.envelope import Envelope, make_envelope


def grid() -> ZoneLayer:
    lons = np.linspace(-74.26, -73.70, 41)
    lats = np.linspace(40.49, 40.92, 26)
    cells = [box(lons[i], lats[j], lons[i + 1], lats[j + 1])
             for i in range(40) for j in range(25)]
    return ZoneLayer.from_geometries("grid", [f"cell-{k}" for k in range(len(cells))], cells)


def rules() -> RuleSet:
    alert = {"severity": "Minor", "category": "Env", "message": "{pm25} at {zone}"}
    out = []
    for k in range(50):
        kind = k % 5
        if kind == 0:
            cond = {"type": "threshold", "attribute": "pm25", "op": ">", "value": 20 + k / 10}
        elif kind == 1:
            cond = {"type": "all", "conditions": [
                {"type": "threshold", "attribute": "pm25", "op": ">=", "value": 18 + k / 10},
                {"type": "in_zone", "layer": "grid"}]}
        elif kind == 2:
            cond = {"type": "all", "conditions": [
                {"type": "in_zone", "layer": "grid",
                 "zones": [f"cell-{c}" for c in range(k * 10, k * 10 + 200)]},
                {"type": "threshold", "attribute": "pm25", "op": ">", "value": 24}]}
        elif kind == 3:
            cond = {"type": "threshold", "attribute": "pm25", "op": "between",
                    "range": [25 + k / 20, 27 + k / 20]}
        else:
            cond = {"type": "all", "conditions": [
                {"type": "proximity", "point": [-73.95, 40.75], "within_m": 2000 + 300 * k},
                {"type": "threshold", "attribute": "pm25", "op": ">", "value": 24}]}
        out.append({"id": f"rule-{k}", "domain": "environment", "condition": cond,
                    "alert": {**alert, "zone_layer": "grid"} if kind in (1, 2) else alert})
    # the grid is built in memory; the declared path is never read
    return RuleSet.model_validate({"zones": [{"layer": "grid", "path": "grid.geojson"}],
                                   "rules": out})


def events(total: int) -> list[Envelope]:
    base = [e for e in FileSource(load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")).run()
            if isinstance(e, Envelope)]
    return [make_envelope(source=e.source, source_record_id=f"{e.id}/{i}", domain=e.domain,
                          kind=e.kind, time=e.time, entity_id=e.entity_id,
                          geometry=e.geometry, attributes=e.attributes)
            for i, e in ((i, base[i % len(base)]) for i in range(total))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    engine = RuleEngine(rules(), ZoneIndex([grid()]))
    batch = events(args.events)
    frames = [batch[i:i + args.batch] for i in range(0, len(batch), args.batch)]
    engine.evaluate(frames[0])  # warm-up
    started = time.perf_counter()
    alerts = sum(len(engine.evaluate(frame)) for frame in frames)
    seconds = time.perf_counter() - started
    print(json.dumps({"rules": 50, "zones": 1000, "events": len(batch), "batch": args.batch,
                      "alerts": alerts, "seconds": round(seconds, 3),
                      "events_per_s": round(len(batch) / seconds)}))


if __name__ == "__main__":
    main()
