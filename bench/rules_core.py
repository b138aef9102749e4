"""Benchmark (a) of the rules issue: the rule core outside Faust — 50 rules over 1,000
zones (see ``workload.py``), one core, in events/s.

Each batch is timed from the bytes of an ``events`` frame as the worker receives it:
decode the columnar frame, look every point up in the zone grid, evaluate the 50 rules
as numpy masks and build the alerts. Run for both alerting regimes (typical ~2 % and
heavy ~23 % of events raising an alert), and once more with two forecast rules
(``forecast_exceedance`` and ``anomaly``) added to the typical set, to measure what
scoring against a forecast grid adds per event.

Usage: python bench/rules_core.py [--events 200000] [--batch 500]
"""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
from workload import events, grid, rules

from citywatch.forecasts.grid import ForecastBook, ForecastGrid
from citywatch.forecasts.models import SeasonalNaive
from citywatch.geo.zones import ZoneIndex
from citywatch.rules.engine import RuleEngine
from citywatch.rules.model import RuleSet
from citywatch.streams.batch import decode_frame, encode_batch
from citywatch.streams.envelope import Envelope


def forecast_book(sample: list[Envelope]) -> ForecastBook:
    """A seasonal-naive model of the daily mean PM2.5 of the first two weeks, its grid
    covering the rest of the sample (a real model, fitted on the bench's own data)."""
    frame = pd.DataFrame({"t": [e.time for e in sample],
                          "pm25": [e.attributes.get("pm25") for e in sample]})
    daily = frame.set_index("t")["pm25"].astype(float).resample("D").mean()
    model = SeasonalNaive(season=7).fit(daily.iloc[:14])
    predicted = model.predict(len(daily) - 14 + 7)
    return ForecastBook({"nyc:pm25": ForecastGrid.from_frame(
        "nyc:pm25", "nyc:pm25:seasonal_naive", "bench", predicted)})


# Scoring only: every environment event is looked up in the grid (and one monitor's
# readings checked against the interval), with thresholds no forecast reaches, so the
# figure is the lookup's cost and not that of building extra alerts.
FORECAST_RULES = [
    {"id": "pm25-ahead", "domain": "environment", "condition": {
        "type": "forecast_exceedance", "series": "nyc:pm25", "op": ">", "value": 1e6,
        "horizon": "2d"}, "alert": {"severity": "Minor", "category": "Env",
                                    "message": "{forecast} at {expected_at}"}},
    {"id": "pm25-unusual", "domain": "environment", "condition": {
        "type": "anomaly", "series": "nyc:pm25", "entity": "360610135", "attribute": "pm25",
        "count": 100_000}, "alert": {"severity": "Minor", "category": "Env", "message": "{pm25}"}}]


def run(alerting: str, payloads: list[bytes], total: int,
        book: ForecastBook | None = None) -> dict[str, float]:
    ruleset = rules(alerting)
    if book is not None:
        ruleset = RuleSet.model_validate({**ruleset.model_dump(), "rules": [
            *ruleset.model_dump()["rules"], *FORECAST_RULES]})
    engine = RuleEngine(ruleset, ZoneIndex([grid()]), forecasts=book)
    engine.process(decode_frame(payloads[0]))  # warm-up
    started = time.perf_counter()
    alerts = sum(len(engine.process(decode_frame(p)).alerts) for p in payloads)
    seconds = time.perf_counter() - started
    return {"alerts": alerts, "alerts_per_event": round(alerts / total, 4),
            "seconds": round(seconds, 3), "events_per_s": round(total / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    batch = events(args.events)
    payloads = [encode_batch(batch[i:i + args.batch])
                for i in range(0, len(batch), args.batch)]
    results = {regime: run(regime, payloads, len(batch)) for regime in ("typical", "heavy")}
    results["typical_with_forecast_scoring"] = run("typical", payloads, len(batch),
                                                   forecast_book(batch))
    base = 1 / results["typical"]["events_per_s"]
    extra = 1 / results["typical_with_forecast_scoring"]["events_per_s"]
    print(json.dumps({"rules": 50, "zones": 1000, "events": len(batch), "batch": args.batch,
                      **results, "forecast_scoring_us_per_event": round(1e6 * (extra - base), 3),
                      "forecast_scoring_overhead_pct": round(100 * (extra - base) / base, 1)}))


if __name__ == "__main__":
    main()
