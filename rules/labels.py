"""Labelled incidents (what really happened) and how well alerts caught them: precision,
recall and lead time, with explicit tolerances. Without labels there is no such score:
a backtest then reports volumes only, never an invented false-positive rate.

A label has a ``time``, a place (``lon``/``lat``, or a ``zone`` name) and optionally a
``category``; labels come from CSV or JSON (a list of objects). An alert *catches* a
label when its category agrees (if the label has one), its place agrees (the same zone,
any case; or its location within ``within_m`` metres, great-circle distance on a sphere
of radius 6,371,008.8 m), and its event time lies from ``before`` ahead of the label to
``after`` past it. Precision: the share of alerts that catch some label; recall: the
share of labels some alert catches; lead time: per caught label, how long before it the
earliest catching alert came (negative: after it).

Example:
    >>> from datetime import UTC, datetime, timedelta
    >>> label = Label(id="l1", time=datetime(2024, 1, 1, 12, tzinfo=UTC), lon=0.0, lat=0.0)
    >>> class A:  # any alert-like object
    ...     category, zone_name = "Geo", None
    ...     geometry = {"type": "Point", "coordinates": [0.0, 0.1]}
    ...     event_time = datetime(2024, 1, 1, 11, tzinfo=UTC)
    >>> score([A()], [label], before=timedelta(hours=2), after=timedelta(0),
    ...       within_m=20_000)["recall"]
    1.0
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import shapely
from pydantic import AwareDatetime, BaseModel, ConfigDict, model_validator
from shapely.geometry import shape

EARTH_RADIUS_M = 6_371_008.8


class LabelError(ValueError):
    """A labels file that cannot be used; names the file and the record."""


class Label(BaseModel):
    """One real incident."""

    model_config = ConfigDict(extra="ignore")

    id: str
    time: AwareDatetime
    lon: float | None = None
    lat: float | None = None
    zone: str | None = None
    category: str | None = None

    @model_validator(mode="after")
    def _has_a_place(self) -> Label:
        if self.zone is None and (self.lon is None or self.lat is None):
            raise ValueError("a label needs a zone, or lon and lat")
        return self


def read_labels(path: Path) -> list[Label]:
    """Labels from a CSV file (columns time, lon, lat or zone, category, id) or a JSON
    list of such objects; ``id`` defaults to the row number."""
    try:
        rows: list[dict[str, Any]]
        if path.suffix.lower() == ".json":
            rows = json.loads(path.read_text())
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            rows = [{k: v for k, v in row.items() if v != ""}
                    for row in frame.to_dict("records")]
    except (OSError, ValueError) as exc:
        raise LabelError(f"{path}: cannot read labels: {exc}") from None
    if not isinstance(rows, list):
        raise LabelError(f"{path}: a JSON labels file is a list of objects")
    labels = []
    for number, row in enumerate(rows, start=1):
        try:
            labels.append(Label.model_validate({"id": str(number), **row}))
        except ValueError as exc:
            first = str(exc).splitlines()
            raise LabelError(f"{path}: record {number}: {' '.join(first[1:3]) or first[0]}"
                             ) from None
    return labels


def haversine_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Great-circle distance in metres on a sphere of radius 6,371,008.8 m."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _location(alert: Any) -> tuple[float, float] | None:
    geometry = getattr(alert, "geometry", None)
    if not geometry:
        return None
    if geometry.get("type") == "Point":
        lon, lat = geometry["coordinates"][:2]
        return float(lon), float(lat)
    centre = shapely.centroid(shape(geometry))
    return float(centre.x), float(centre.y)


def catches(alert: Any, label: Label, *, before: timedelta, after: timedelta,
            within_m: float) -> bool:
    """Whether ``alert`` caught ``label`` within the tolerances."""
    if label.category is not None and alert.category != label.category:
        return False
    if not label.time - before <= alert.event_time <= label.time + after:
        return False
    if label.zone is not None:
        return (alert.zone_name or "").lower() == label.zone.lower()
    where = _location(alert)
    assert label.lon is not None and label.lat is not None
    return where is not None and haversine_m(where[0], where[1], label.lon,
                                             label.lat) <= within_m


def score(alerts: Sequence[Any], labels: Sequence[Label], *, before: timedelta,
          after: timedelta, within_m: float) -> dict[str, Any]:
    """Precision, recall and median lead time of ``alerts`` against ``labels``."""
    caught: dict[str, datetime] = {}  # label id -> earliest catching alert's time
    useful = 0
    for alert in alerts:
        hit = False
        for label in labels:
            if catches(alert, label, before=before, after=after, within_m=within_m):
                hit = True
                earliest = caught.get(label.id)
                if earliest is None or alert.event_time < earliest:
                    caught[label.id] = alert.event_time
        useful += hit
    leads = [(label.time - caught[label.id]).total_seconds() for label in labels
             if label.id in caught]
    return {"alerts": len(alerts), "labels": len(labels), "alerts_catching": useful,
            "labels_caught": len(caught),
            "precision": round(useful / len(alerts), 4) if alerts else None,
            "recall": round(len(caught) / len(labels), 4) if labels else None,
            "median_lead_seconds": statistics.median(leads) if leads else None}
