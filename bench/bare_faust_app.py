"""Baseline for bench/pipeline.py: a bare Faust agent, one event per Kafka message,
that only decodes JSON and applies one threshold. Configured by env vars set by the
benchmark; writes ``{"first": t, "last": t, "count": n, "matches": m}`` when done."""

from __future__ import annotations

import json
import os
import time

import faust
import msgspec

BOOTSTRAP = os.environ["BENCH_BOOTSTRAP"]
TOPIC = os.environ["BENCH_TOPIC"]
TOTAL = int(os.environ["BENCH_TOTAL"])
RESULT = os.environ["BENCH_RESULT"]

app = faust.App(f"bench-bare-{TOPIC}", broker=f"kafka://{BOOTSTRAP}", store="memory://",
                web_enabled=False, autodiscover=False, broker_session_timeout=6,
                broker_rebalance_timeout=6, broker_heartbeat_interval=1,
                consumer_auto_offset_reset="earliest", datadir=os.environ["BENCH_DATADIR"])
topic = app.topic(TOPIC, value_serializer="raw")
decoder = msgspec.json.Decoder()


@app.agent(topic)
async def bare(stream):  # noqa: ANN001, ANN201 - benchmark baseline
    count = matches = 0
    first = 0.0
    async for value in stream:
        if count == 0:
            first = time.perf_counter()
        event = decoder.decode(value)
        if event["attributes"].get("pm25", 0) > 20:
            matches += 1
        count += 1
        if count == TOTAL:
            with open(RESULT, "w") as fh:
                json.dump({"first": first, "last": time.perf_counter(), "count": count,
                           "matches": matches}, fh)


if __name__ == "__main__":
    faust.Worker(app, loglevel="warn", quiet=True).execute_from_commandline()
