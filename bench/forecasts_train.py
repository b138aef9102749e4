"""Benchmark: training 100 series of 720 hourly points the way ``citywatch forecasts
train`` does (rolling-origin backtest of every candidate, Prophet only where the series is
seasonal, the choice fitted on the window, its forecast grid), in parallel worker
processes (2 on this machine); wall time, and how often each model was chosen.

Series are real: 720-hour windows of the I-94 volume and of the two PRSA pollutants
PM2.5 and NO2 at Aotizhongxin, taken at different offsets.

Usage: python bench/forecasts_train.py [--shared ../shared/data] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from citywatch.forecasts.series import SeriesReport, load_series
from citywatch.forecasts.training import SeriesSpec, train_on


def train(args: tuple[int, pd.Series]) -> str:
    k, window = args
    spec = SeriesSpec(key=f"bench:{k}", csv="-", value="v", train_window=720, folds=4)
    report = SeriesReport(len(window), 0, 0, int(window.isna().sum()), 0, 0.0)
    return train_on(spec, window, report).kind


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
        chosen = list(pool.map(train, enumerate(series), chunksize=5))
    seconds = time.perf_counter() - started
    print(json.dumps({"series": len(chosen), "points_each": 720, "workers": args.workers,
                      "wall_seconds": round(seconds, 2),
                      "seconds_per_series": round(seconds / len(chosen), 3),
                      "chosen": dict(Counter(chosen).most_common())}))


if __name__ == "__main__":
    main()
