"""Rebuild the demo slices in ``data/`` from ``../shared/data`` (run from the repo root).

Slices select whole rows and copy their bytes unchanged (line endings included); no value
is edited. Usage: ``python ops/demo/make_slices.py ../shared/data``.
"""

from __future__ import annotations

import csv
import io
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

OUT = Path(__file__).parent / "data"
ZONES = Path(__file__).parent / "zones"


def slice_csv(src: Path, dst: Path, keep: Callable[[dict[str, str]], bool],
              encoding: str = "utf-8", last: int | None = None) -> int:
    """Copy the header and the rows ``keep`` accepts (or the ``last`` N rows), byte-exact."""
    lines = src.read_bytes().split(b"\n")
    if lines[-1] == b"":
        lines = lines[:-1]
    header = next(csv.reader(io.StringIO(lines[0].decode(encoding))))
    body = lines[1:]
    if last is not None:
        chosen = body[-last:]
    else:
        chosen = [raw for raw in body
                  if keep(dict(zip(header, next(csv.reader(io.StringIO(raw.decode(encoding)))),
                                   strict=True)))]
    dst.write_bytes(b"\n".join([lines[0], *chosen]) + b"\n")
    return len(chosen)


def main(shared: Path) -> None:
    OUT.mkdir(exist_ok=True)
    ZONES.mkdir(exist_ok=True)
    print("epa", slice_csv(shared / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv",
                           OUT / "epa_pm25_nyc_2022q1.csv",
                           lambda r: r["Date"][:2] in {"01", "02", "03"}))
    print("i94", slice_csv(shared / "traffic/Metro_Interstate_Traffic_Volume.csv",
                           OUT / "i94_traffic_2018_tail.csv", lambda r: True, last=2000))
    print("inspections", slice_csv(shared / "food_safety/sf_inspections_plus.csv",
                                   OUT / "sf_inspections_2017.csv",
                                   lambda r: r["date"].startswith("2017")))
    with (OUT / "sf_inspections_2017.csv").open(newline="") as fh:
        ids = {row["business_id"] for row in csv.DictReader(fh)}
    print("businesses", slice_csv(shared / "food_safety/sf_businesses.csv",
                                  OUT / "sf_businesses_2017.csv",
                                  lambda r: r["business_id"] in ids, encoding="latin-1"))
    shutil.copyfile(shared / "disasters/usgs_all_week.geojson", OUT / "usgs_all_week.geojson")
    for name in ("new-york-city-boroughs", "san-francisco"):
        shutil.copyfile(shared / f"boundaries/{name}.geojson", ZONES / f"{name}.geojson")
    shutil.copyfile(shared / "boundaries/LICENSE.click_that_hood",
                    ZONES / "LICENSE.click_that_hood")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
