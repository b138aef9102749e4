"""Benchmark: 100 series of 720 hourly points, Prophet fit + 24-hour predict each, in
parallel worker processes (2 on this machine), wall time.

Series are real: 720-hour windows of the I-94 volume and of the two PRSA pollutants
PM2.5 and NO2 at Aotizhongxin, taken at different offsets.

Usage: python bench/forecasts_train.py [--shared ../shared/data] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from citywatch.forecasts.models import ProphetModel
from citywatch.forecasts.series import load_series


def fit_predict(window: pd.Series) -> float:
    return float(ProphetModel().fit(window).predict(24)["yhat"].iloc[0])


def windows(shared: Path, count: int = 100) -> list[pd.Series]:
    i94, _ = load_series(str(shared / "traffic/Metro_Interstate_Traffic_Volume.csv"),
                         ["date_time"], "traffic_volume")
    prsa = shared / "air_quality/PRSA_Data_Aotizhongxin_20130301-20170228.csv"
    pm25, _ = load_series(str(prsa), ["year", "month", "day", "hour"], "PM2.5")
    no2, _ = load_series(str(prsa), ["year", "month", "day", "hour"], "NO2")
    sources = [i94.iloc[-20_000:], pm25, no2]
    out = []
    for k in range(count):
        series = sources[k % 3]
        start = (k // 3) * 500
        out.append(series.iloc[start:start + 720])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    series = windows(args.shared.resolve())
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        results = list(pool.map(fit_predict, series, chunksize=5))
    seconds = time.perf_counter() - started
    print(json.dumps({"series": len(results), "points_each": 720, "workers": args.workers,
                      "wall_seconds": round(seconds, 2),
                      "seconds_per_series": round(seconds / len(results), 3)}))


if __name__ == "__main__":
    main()
