"""Benchmark of the analysts issue: a two-version backtest (``citywatch.rules.backtest``)
over at least a million events, in events/s (both versions' events counted once: the
rate is events of input per second of the whole backtest).

The events are the bundled demo feeds' real readings (EPA PM2.5, I-94 traffic, SF
inspections, USGS quakes) repeated with distinct ids and times shifted by whole copies
of their span, so every copy is new input to the stateful rules. The candidate is the
demo rule set with one threshold lowered, one zone list changed and one persistence
window widened (the variant of ``tests/test_backtest.py``).

Usage: python bench/backtest.py [--events 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import timedelta

import msgspec
import yaml

from citywatch.connectors.file import FileSource, load_feed
from citywatch.ops.demo import demo_feeds
from citywatch.ops.settings import DEMO_DIR
from citywatch.rules.backtest import backtest
from citywatch.rules.loader import load_ruleset, parse_ruleset
from citywatch.streams.envelope import Envelope


def real_events() -> list[Envelope]:
    found: list[Envelope] = []
    for feed in demo_feeds():
        found += [e for e in FileSource(load_feed(feed)).run() if isinstance(e, Envelope)]
    return found


def repeated(base: list[Envelope], wanted: int) -> list[Envelope]:
    span = max(e.time for e in base) - min(e.time for e in base) + timedelta(days=1)
    out: list[Envelope] = []
    copy = 0
    while len(out) < wanted:
        shift = span * copy
        out += [msgspec.structs.replace(e, id=f"{e.id}~{copy}", time=e.time + shift,
                                        received_at=e.received_at + shift)
                for e in base[:wanted - len(out)]]
        copy += 1
    return out


def candidate_rules() -> str:
    rules = yaml.safe_load((DEMO_DIR / "rules.yaml").read_text())
    by_id = {rule["id"]: rule for rule in rules["rules"]}
    by_id["quake-m45"]["condition"]["value"] = 4.0
    next(c for c in by_id["pm25-high-nyc"]["condition"]["conditions"]
         if c["type"] == "in_zone")["zones"] = ["Bronx", "Queens"]
    by_id["i94-congestion-persisting"]["condition"]["duration"] = "5h"
    return yaml.safe_dump(rules, sort_keys=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs over the same events (the machine is noisy): the best "
                             "and the median are reported")
    args = parser.parse_args()
    base = real_events()
    events = repeated(base, args.events)
    baseline = load_ruleset(DEMO_DIR / "rules.yaml")
    candidate = parse_ruleset(candidate_rules(), DEMO_DIR / "candidate.yaml")
    seconds = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        report = backtest(baseline, candidate, events)
        seconds.append(time.perf_counter() - started)
    print(json.dumps({"events": len(events), "real_events_repeated": len(base),
                      "seconds": [round(s, 2) for s in seconds],
                      "events_per_second": round(len(events) / min(seconds)),
                      "events_per_second_median": round(len(events)
                                                        / statistics.median(seconds)),
                      "alerts": report["alerts"], "totals": report["totals"]}))


if __name__ == "__main__":
    main()
