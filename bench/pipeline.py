"""Events through, in one run on the embedded broker:

- a bare one-event-per-message Faust agent (decode + one threshold);
- the citywatch worker (its ingest process: decode and validate → columnar
  micro-batches; the worker: zone lookup over 1,000 zones → 50 rules → alerts, one per
  message; its store process → incident store), with the CPU per event of each process;
- with ``--quix-python PATH`` (the interpreter of a venv made by ``bench/quix_venv.sh``):
  a bare Quix Streams app (decode + one threshold) and a Quix app doing the same
  50-rule job per event (``quix_apps.py``), whose alert count is the independent
  per-event evaluation the citywatch worker's stored alerts must equal;
- with ``--scaling``: the worker again with 1 and with 2 processes on 4 partitions
  (aggregate events/s), and the resident memory of each worker at the end.

Events are real EPA PM2.5 readings, repeated with distinct record ids; the rules are
``workload.py``'s (typical alerting: ~2 % of events). ``--entities N`` spreads the events
over N distinct entities and adds a per-entity persistence rule, so every entity has
state (the memory figure). Prints one JSON object with every rate and the ratios.

Usage: python bench/pipeline.py [--events 300000] [--batch 2000] [--alerting typical]
           [--quix-python /work/quixvenv/bin/python] [--scaling] [--entities 100000] [--live]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import yaml
from confluent_kafka import Producer
from workload import events, rules, write_grid

from citywatch.ops.progress import wait_until_drained
from citywatch.ops.settings import Settings
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.worker_process import WorkerProcess
from citywatch.rules.model import RuleSet
from citywatch.streams.broker import EmbeddedBroker
from citywatch.streams.envelope import encode_envelope
from citywatch.streams.kafka_admin import KafkaAdmin


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    """One message per event, as connectors write them (librdkafka: ~0.5M msg/s here)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1,
                         "enable.idempotence": False, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 2_000_000})
    for i, p in enumerate(payloads):
        producer.produce(topic, p)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)


def bench_bare(bootstrap: str, payloads: list[bytes], workdir: Path) -> dict[str, float]:
    topic = "bench.bare"
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics([topic])
    produce(bootstrap, topic, payloads)
    result = workdir / "bare.json"
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic,
           "BENCH_TOTAL": str(len(payloads)), "BENCH_RESULT": str(result),
           "BENCH_DATADIR": str(workdir / "bare-data")}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "bare_faust_app.py"),
                             "worker", "-l", "warn"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not result.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.1)
        data = json.loads(result.read_text())
    finally:
        proc.terminate()
        proc.wait(30)
    seconds = data["last"] - data["first"]
    return {"events": data["count"], "seconds": round(seconds, 3),
            "events_per_s": round(data["count"] / seconds)}


def bench_quix(python: str, mode: str, bootstrap: str, payloads: list[bytes],
               workdir: Path, ruleset: RuleSet) -> dict[str, float]:
    """A Quix Streams app (``quix_apps.py``) over ``payloads``, in its own interpreter."""
    topic = f"bench.quix-{mode}"
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics([topic])
    produce(bootstrap, topic, payloads)
    result = workdir / f"quix-{mode}.json"
    rules_json = workdir / "rules.json"
    rules_json.write_text(json.dumps(ruleset.model_dump(mode="json")))
    env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_TOPIC": topic,
           "BENCH_TOTAL": str(len(payloads)), "BENCH_RESULT": str(result),
           "BENCH_RULES": str(rules_json), "BENCH_GRID": str(workdir / "grid.geojson")}
    subprocess.run([python, str(Path(__file__).parent / "quix_apps.py"), mode], env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=1800,
                   check=True)
    data = json.loads(result.read_text())
    seconds = data["last"] - data["first"]
    return {"events": data["count"], "seconds": round(seconds, 3),
            "events_per_s": round(data["count"] / seconds), "alerts": data["alerts"]}


def rss_mb(pid: int) -> float:
    """Resident memory of a worker (MB): its process and its children (ingest, store)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for process in [pid, *map(int, children)]:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


def stage_pids(worker: int, stage: str) -> list[int]:
    """The process a worker started for ``stage`` (ingest, store): named ``cw-<stage>``."""
    children = Path(f"/proc/{worker}/task/{worker}/children").read_text().split()
    return [int(c) for c in children
            if Path(f"/proc/{c}/comm").read_text().strip() == f"cw-{stage}"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_pipeline(bootstrap: str, payloads: list[bytes], workdir: Path, batch: int,
                   ruleset: RuleSet, *, workers: int = 1, partitions: int = 1,
                   tag: str = "cw", live: bool = False,
                   broker_pid: int | None = None) -> dict[str, float]:
    """Start the workers and let every stage join (one warm-up event); then time, until
    every stage has drained, the events of a topic filled beforehand (the ingest
    processes are paused with SIGSTOP while it is filled: measured as the Faust and Quix
    apps are, on a topic already written), or with ``live`` the events produced at once
    while the workers run (the producer shares the two cores)."""
    rules_path = workdir / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(ruleset.model_dump(mode="json")))
    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=f"bench-{tag}.",
                        app_id=f"bench-{tag}",
                        database_url=f"sqlite:///{workdir / f'{tag}.db'}",
                        data_dir=workdir / f"{tag}-data", rules_path=rules_path,
                        batch_max_events=batch, topic_partitions=partitions)
    topic = settings.topics.raw("environment")
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(settings.topics.all, partitions)
        running = [WorkerProcess(settings, bootstrap, workdir / f"{tag}-{n}.log").start()
                   for n in range(workers)]

        def alive() -> bool:
            return all(w.alive() for w in running)
        try:
            produce(bootstrap, topic, payloads[:1])
            wait_until_drained(admin, settings, alive=alive)
            ingests = [p for w in running for p in stage_pids(w.pid, "ingest")]
            paused = [] if live else ingests
            watched = {"worker": [w.pid for w in running], "ingest": ingests,
                       "store": [p for w in running for p in stage_pids(w.pid, "store")],
                       "broker": [broker_pid] if broker_pid else []}
            def cpu_now() -> dict[str, float]:
                return {k: sum(map(cpu_seconds, pids)) for k, pids in watched.items()}
            cpu_before = cpu_now()
            for pid in paused:
                os.kill(pid, signal.SIGSTOP)
            try:
                if live:
                    started = time.perf_counter()
                produce(bootstrap, topic, payloads[1:])
                if not live:  # the CPU of the timed part only (not the broker's fill)
                    cpu_before = cpu_now()
            finally:
                for pid in paused:
                    os.kill(pid, signal.SIGCONT)
            if not live:
                started = time.perf_counter()
            wait_until_drained(admin, settings, alive=alive, poll=0.1)
            seconds = time.perf_counter() - started
            cpu = {k: sum(map(cpu_seconds, pids)) - cpu_before[k]
                   for k, pids in watched.items()}
            memory = [rss_mb(w.pid) for w in running]
        finally:
            for worker in running:
                worker.stop()
    total = len(payloads) - 1
    store = IncidentStore(settings.database_url)
    alerts = store.counts()["alerts_total"]
    store.close()
    return {"events": total, "seconds": round(seconds, 3),
            "events_per_s": round(total / seconds), "alerts_stored": alerts,
            "workers": workers, "partitions": partitions, "rss_mb": memory,
            # CPU per event of each process kind while timed (2 cores: 2 s of CPU a second;
            # with --live, the broker's and the worker's include taking the events in)
            "cpu_us_per_event": {k: round(v / total * 1e6, 1) for k, v in cpu.items()}}


def with_entities(ruleset: RuleSet, count: int) -> RuleSet:
    """The workload plus a per-entity persistence rule (state for every entity)."""
    return RuleSet.model_validate({**ruleset.model_dump(mode="json"), "rules": [
        *ruleset.model_dump(mode="json")["rules"],
        {"id": "pm25-persisting", "domain": "environment",
         "condition": {"type": "persistence", "count": 3, "condition": {
             "type": "threshold", "attribute": "pm25", "op": ">", "value": 40}},
         "alert": {"severity": "Minor", "category": "Env", "message": "{entity_id}"}}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--bare-events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--alerting", choices=["typical", "heavy"], default="typical")
    parser.add_argument("--quix-python", help="interpreter of a venv with quixstreams "
                                              "(bench/quix_venv.sh)")
    parser.add_argument("--scaling", action="store_true",
                        help="also 1 and 2 workers on 4 partitions")
    parser.add_argument("--live", action="store_true",
                        help="produce the events while the worker runs (the earlier "
                             "measure) instead of into a topic filled beforehand")
    parser.add_argument("--entities", type=int, default=0,
                        help="spread events over this many entities, each with state")
    args = parser.parse_args()
    evs = events(args.events)
    if args.entities:
        evs = [msgspec.structs.replace(e, entity_id=f"sensor-{i % args.entities}")
               for i, e in enumerate(evs)]
    payloads = [encode_envelope(e) for e in evs]
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        workdir = Path(tmp)
        ruleset = rules(args.alerting, str(write_grid(workdir / "grid.geojson")))
        if args.entities:
            ruleset = with_entities(ruleset, args.entities)
        out["bare_faust"] = bench_bare(broker.bootstrap, payloads[:args.bare_events], workdir)
        if args.quix_python:
            out["bare_quix"] = bench_quix(args.quix_python, "bare", broker.bootstrap,
                                          payloads, workdir, ruleset)
            if not args.entities:
                out["quix_same_job"] = bench_quix(args.quix_python, "rules",
                                                  broker.bootstrap, payloads, workdir,
                                                  ruleset)
        broker_pid = broker.pid  # its CPU time is read too
        pipeline = bench_pipeline(broker.bootstrap, payloads, workdir, args.batch, ruleset,
                                  live=args.live, broker_pid=broker_pid)
        out["citywatch_pipeline"] = pipeline
        if args.scaling:
            for workers in (1, 2):
                out[f"citywatch_{workers}x4"] = bench_pipeline(
                    broker.bootstrap, payloads, workdir, args.batch, ruleset,
                    workers=workers, partitions=4, tag=f"cw{workers}x4", live=args.live,
                    broker_pid=broker_pid)
    rate = pipeline["events_per_s"]
    ratios = {"citywatch/bare_faust": round(rate / out["bare_faust"]["events_per_s"], 2)}
    if "bare_quix" in out:
        ratios["citywatch/bare_quix"] = round(rate / out["bare_quix"]["events_per_s"], 2)
    if "quix_same_job" in out:
        ratios["citywatch/quix_same_job"] = round(
            rate / out["quix_same_job"]["events_per_s"], 2)
        out["alerts_equal_per_event_evaluation"] = (
            pipeline["alerts_stored"] == out["quix_same_job"]["alerts"])
    if args.scaling:
        ratios["2_workers/1_worker"] = round(out["citywatch_2x4"]["events_per_s"]
                                             / out["citywatch_1x4"]["events_per_s"], 2)
    out["ratios"] = ratios
    print(json.dumps(out))


if __name__ == "__main__":
    main()
