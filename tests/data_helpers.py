"""Test inputs derived from the real shared data (corruptions are made in the test)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import yaml

from citywatch.ops.settings import DEMO_DIR


def malformed_epa(shared_data: Path, tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """40 real EPA rows; three of them corrupted in one field each."""
    source = shared_data / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv"
    with source.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        rows = [row for row, _ in zip(reader, range(40), strict=False)]
    rows[4]["Daily Mean PM2.5 Concentration"] = "n/a"
    rows[9]["SITE_LATITUDE"] = ""
    rows[19]["Date"] = "2022-31-31"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = tmp_path / "epa_bad.csv"
    data.write_text(out.getvalue())
    feed = yaml.safe_load((DEMO_DIR / "feeds/epa_pm25_nyc.yaml").read_text())
    feed["path"] = str(data)
    config = tmp_path / "epa_bad.yaml"
    config.write_text(yaml.safe_dump(feed))
    # line numbers: header is line 1, rows[i] is line i + 2
    return config, {6: "Daily Mean PM2.5 Concentration", 11: "SITE_LATITUDE", 21: "Date"}


def epa_by_date(shared_data: Path, tmp_path: Path, speed: float | None = None) -> Path:
    """A feed config for the full 2022 EPA file with its rows ordered by date (values
    untouched, as a live feed would deliver them), optionally paced."""
    from datetime import datetime

    source = shared_data / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv"
    lines = source.read_text().splitlines(keepends=True)
    rows = list(csv.reader(lines[1:]))
    order = sorted(range(len(rows)), key=lambda i: datetime.strptime(rows[i][0], "%m/%d/%Y"))
    data = tmp_path / "epa_by_date.csv"
    data.write_text(lines[0] + "".join(lines[1 + i] for i in order))
    feed = yaml.safe_load((DEMO_DIR / "feeds/epa_pm25_nyc.yaml").read_text())
    feed.update(path=str(data))
    if speed is not None:
        feed.update(speed=speed)
    config = tmp_path / "epa.yaml"
    config.write_text(yaml.safe_dump(feed))
    return config


# stateful rules over the EPA file: a zone window, an absence and a persistence rule
_ALERT = {"severity": "Minor", "category": "Env", "message": "{entity_id} {zone}"}
STATEFUL_RULES = {
    "zones": [{"layer": "nyc",
               "path": str(DEMO_DIR / "zones/new-york-city-boroughs.geojson")}],
    "rules": [
        {"id": "pm25-week-borough", "domain": "environment",
         "condition": {"type": "window", "attribute": "pm25", "aggregate": "avg",
                       "size": "7d", "allowed_lateness": "1d", "group_by": "zone:nyc",
                       "op": ">", "value": 8}, "alert": _ALERT},
        {"id": "monitor-silent", "domain": "environment",
         "condition": {"type": "absence", "after": "5d"}, "alert": _ALERT},
        {"id": "pm25-persisting", "domain": "environment",
         "condition": {"type": "persistence", "count": 3, "condition": {
             "type": "threshold", "attribute": "pm25", "op": ">", "value": 12}},
         "alert": {**_ALERT, "cooldown": "2d"}},
    ]}


def split_csv(path: Path, cuts: list[int]) -> list[Path]:
    lines = path.read_text().splitlines(keepends=True)
    bounds = [1, *[c + 1 for c in cuts], len(lines)]
    parts = []
    for n, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        part = path.with_name(f"part{n}.csv")
        part.write_text(lines[0] + "".join(lines[a:b]))
        parts.append(part)
    return parts


def pm25_borough_rules(folder: Path, threshold: float, *, rule_id: str = "pm25-nyc",
                       ) -> Path:
    """A rule file with its own copy of the NYC borough zones, as an analyst writes it:
    daily PM2.5 above ``threshold`` in a borough."""
    import shutil

    import yaml

    from citywatch.ops.settings import DEMO_DIR

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEMO_DIR / "zones/new-york-city-boroughs.geojson",
                folder / "boroughs.geojson")
    path = folder / f"rules-{threshold:g}.yaml"
    path.write_text(yaml.safe_dump({
        "zones": [{"layer": "boroughs", "path": "boroughs.geojson"}],
        "rules": [{"id": rule_id, "domain": "environment",
                   "condition": {"type": "all", "conditions": [
                       {"type": "threshold", "attribute": "pm25", "op": ">",
                        "value": threshold},
                       {"type": "in_zone", "layer": "boroughs"}]},
                   "alert": {"severity": "Minor", "category": "Health",
                             "message": "PM2.5 {pm25} in {zone}"}}]}))
    return path
