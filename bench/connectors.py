"""Benchmark: the ``file`` connector's produce rate into the embedded broker, in events/s
(read + map + validate + produce, every message acknowledged, checkpoints every second).

Inputs are real files: the EPA PM2.5 file (10,284 rows), the I-94 file (48,204 rows) and,
for a steady-state figure past start-up costs, five copies of the I-94 file read as one
glob (241,020 rows). The time-parsing cache is cleared before each run.

Usage: python bench/connectors.py [--shared ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.mapping import _parse_text_time
from citywatch.connectors.runner import produce
from citywatch.ops.settings import DEMO_DIR
from citywatch.streams.broker import EmbeddedBroker
from citywatch.streams.topics import TopicNames


def feed(tmp: Path, name: str, data: Path | str) -> Path:
    config = yaml.safe_load((DEMO_DIR / f"feeds/{name}.yaml").read_text())
    config["path"] = str(data)
    out = tmp / f"{name}-{len(list(tmp.iterdir()))}.yaml"
    out.write_text(yaml.safe_dump(config))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    shared = args.shared.resolve()
    results = {}
    with tempfile.TemporaryDirectory() as tmp_name, EmbeddedBroker() as broker:
        tmp = Path(tmp_name)
        i94 = shared / "traffic/Metro_Interstate_Traffic_Volume.csv"
        copies = tmp / "copies"
        copies.mkdir()
        for n in range(5):
            shutil.copyfile(i94, copies / f"i94-{n}.csv")
        feeds = {
            "epa_10k": feed(tmp, "epa_pm25_nyc",
                            shared / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv"),
            "i94_48k": feed(tmp, "i94_traffic", i94),
            "i94_x5_241k": feed(tmp, "i94_traffic", copies / "*.csv"),
        }
        for label, config in feeds.items():
            _parse_text_time.cache_clear()
            source = FileSource(load_feed(config))
            started = time.perf_counter()
            report = produce(source, broker.bootstrap, TopicNames(f"bench{label}."),
                             checkpoint_path=tmp / f"{label}.ckpt")
            seconds = time.perf_counter() - started
            results[label] = {"events": report.events, "seconds": round(seconds, 3),
                              "events_per_s": round(report.events / seconds)}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
