"""Quix Streams apps for ``bench/pipeline.py``, run by the interpreter of their own venv
(``bench/quix_venv.sh``; quixstreams is not a dependency of citywatch, and this file
imports nothing of it).

- ``bare``: JSON decode + one threshold per message (what a minimal Quix app does);
- ``rules``: the same 50-rule × 1,000-zone job citywatch runs, per event: an STRtree
  query per point for the grid cell, each rule tested in Python, geodesic distances with
  pyproj. Its alert count is the independent per-event evaluation the citywatch worker's
  stored alerts must equal.

Environment: BENCH_BOOTSTRAP, BENCH_TOPIC, BENCH_TOTAL (messages to read), BENCH_RESULT
(JSON written at the end), BENCH_RULES and BENCH_GRID (``rules`` only: the rule set as
JSON and the grid GeoJSON).

Usage: /path/to/quix-venv/bin/python bench/quix_apps.py bare|rules
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path


def rule_tests(rules: list[dict], grid_path: str):  # type: ignore[no-untyped-def]
    """One function per rule: (event dict) -> alert or not, evaluated per event."""
    import shapely
    from pyproj import Geod
    from shapely.geometry import shape

    features = json.loads(Path(grid_path).read_text())["features"]
    names = [f["properties"]["name"] for f in features]
    polygons = [shape(f["geometry"]) for f in features]
    tree = shapely.STRtree(polygons)
    geod = Geod(ellps="WGS84")

    def cell(lon: float, lat: float) -> str | None:
        point = shapely.Point(lon, lat)
        for k in sorted(tree.query(point, predicate="intersects").tolist()):
            return names[k]
        return None

    def leaf(cond: dict):  # type: ignore[no-untyped-def]
        kind = cond["type"]
        if kind == "all":
            parts = [leaf(c) for c in cond["conditions"]]
            return lambda e, c: all(p(e, c) for p in parts)
        if kind == "threshold":
            attr, op = cond["attribute"], cond["op"]
            if op == "between":
                low, high = cond["range"]
                return lambda e, c: (isinstance(v := e["attributes"].get(attr), int | float)
                                     and low <= v <= high)
            value = cond["value"]
            compare = {">": float.__gt__, ">=": float.__ge__, "<": float.__lt__,
                       "<=": float.__le__}[op]
            return lambda e, c: (isinstance(v := e["attributes"].get(attr), int | float)
                                 and compare(float(v), float(value)))
        if kind == "in_zone":
            wanted = set(cond["zones"]) if cond.get("zones") else None
            return lambda e, c: c() is not None and (wanted is None or c() in wanted)
        if kind == "proximity":
            plon, plat = cond["point"]
            within = cond["within_m"]

            def near(e: dict, c) -> bool:  # type: ignore[no-untyped-def]
                g = e.get("geometry")
                if not g:
                    return False
                lon, lat = g["coordinates"][:2]
                return geod.inv(lon, lat, plon, plat)[2] <= within
            return near
        raise ValueError(f"condition {kind} not in the benchmark workload")

    tests = [(r["domain"], leaf(r["condition"])) for r in rules]

    def alerts(e: dict) -> int:
        found: list[str | None] = []

        def zone() -> str | None:  # looked up once per event, when a rule asks
            if not found:
                g = e.get("geometry")
                found.append(cell(*g["coordinates"][:2]) if g else None)
            return found[0]
        return sum(1 for domain, test in tests if e["domain"] == domain and test(e, zone))
    return alerts


def main() -> None:
    from quixstreams import Application

    mode = sys.argv[1]
    total = int(os.environ["BENCH_TOTAL"])
    app = Application(broker_address=os.environ["BENCH_BOOTSTRAP"],
                      consumer_group=f"bench-quix-{mode}-{uuid.uuid4().hex[:6]}",
                      auto_offset_reset="earliest", auto_create_topics=False,
                      use_changelog_topics=False)
    topic = app.topic(os.environ["BENCH_TOPIC"], value_deserializer="json")
    sdf = app.dataframe(topic)
    seen = {"count": 0, "alerts": 0, "first": 0.0, "last": 0.0}
    if mode == "bare":
        def test(e: dict) -> int:
            return 1 if e["attributes"].get("pm25", 0) > 35 else 0
    else:
        rules = json.loads(Path(os.environ["BENCH_RULES"]).read_text())["rules"]
        test = rule_tests(rules, os.environ["BENCH_GRID"])

    def count(e: dict) -> None:
        if not seen["count"]:
            seen["first"] = time.perf_counter()
        seen["count"] += 1
        seen["alerts"] += test(e)
        if seen["count"] >= total:
            seen["last"] = time.perf_counter()
            app.stop()

    sdf.update(count)
    app.run()
    with open(os.environ["BENCH_RESULT"], "w") as fh:
        json.dump(seen, fh)


if __name__ == "__main__":
    main()
