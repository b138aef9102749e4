"""``citywatch demo``: the whole pipeline on the embedded defaults with bundled real data.

Starts the broker (unless ``CITYWATCH_KAFKA_BOOTSTRAP`` names one), creates topics, starts
a worker, replays the bundled feed slices, waits until every stage has drained, and
returns a summary whose alert counts reconcile: ``alerts_emitted`` messages reached the
alerts topic this run; ``alerts_repeated`` of them carried an id already emitted this run
(the same alert raised again: the same source record read twice, as the I-94 file's
repeated rows are, or a redelivery); ``alerts_new`` were newly stored. On a fresh store
``alerts_emitted - alerts_repeated == alerts_new == alerts_total``; a second run adds 0.
``alerts_conflicting`` counts ids emitted for different source events (always 0).

Example:
    >>> summary = run_demo(Settings(database_url="sqlite:///demo.db"))  # doctest: +SKIP
    >>> summary["alerts_total"] > 0                                       # doctest: +SKIP
    True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.kafka_sink import PumpReport
from citywatch.connectors.runner import produce
from citywatch.ops.progress import PipelineStalled, wait_until_drained
from citywatch.ops.settings import DEMO_DIR, Settings
from citywatch.ops.store.outbox import Outbox
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.topic_watch import TopicWatch
from citywatch.ops.worker_process import WorkerProcess
from citywatch.streams.broker import EmbeddedBroker
from citywatch.streams.envelope import DOMAINS
from citywatch.streams.kafka_admin import KafkaAdmin


def demo_feeds() -> list[Path]:
    """The bundled feed configurations, one per domain."""
    return sorted((DEMO_DIR / "feeds").glob("*.yaml"))


Progress = Callable[[dict[str, Any]], None]


def run_demo(settings: Settings, *, feeds: list[Path] | None = None,
             started: float | None = None, timeout: float = 180.0,
             on_progress: Progress | None = None) -> dict[str, Any]:
    """Run the demo end to end and return its summary (see module docstring).
    ``on_progress`` sees, as it goes, the events produced per domain, the alerts emitted
    so far and each stage's lag."""
    started = time.monotonic() if started is None else started
    feeds = feeds or demo_feeds()
    if not feeds:
        raise FileNotFoundError(f"no feed configurations in {DEMO_DIR / 'feeds'}")
    store = IncidentStore(settings.database_url)
    store.create_schema()
    stored_before = store.counts()["alerts_total"]
    report = PumpReport()
    with ExitStack() as stack:
        bootstrap = settings.kafka_bootstrap
        if bootstrap is None:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            broker = stack.enter_context(EmbeddedBroker(log_path=settings.data_dir /
                                                        "broker.log"))
            bootstrap = broker.bootstrap
        topics = settings.topics
        admin = stack.enter_context(KafkaAdmin(bootstrap))
        admin.ensure_topics(topics.all, settings.topic_partitions)
        dead_before = sum(admin.end_offsets([topics.deadletter]).values())
        watch = stack.enter_context(TopicWatch(bootstrap, topics.alerts))
        worker = stack.enter_context(
            WorkerProcess(settings, bootstrap, settings.data_dir / "worker.log"))

        def tell(lags: dict[str, int] | None = None) -> None:
            if on_progress is not None:
                on_progress({"events_by_domain": dict(report.events_by_domain),
                             "alerts_emitted": watch.count, "lag": lags or {},
                             "elapsed_seconds": round(time.monotonic() - started, 1)})

        for feed in feeds:
            produce(FileSource(load_feed(feed)), bootstrap, topics, report=report,
                    partitions=settings.topic_partitions)
            tell()
        try:
            wait_until_drained(admin, settings, timeout=timeout, alive=worker.alive,
                               owed=Outbox(store).due, observe=tell)
        except PipelineStalled as exc:
            raise PipelineStalled(f"{exc}\n--- worker log ---\n{worker.log_tail()}") from None
        dead_letters = sum(admin.end_offsets([topics.deadletter]).values()) - dead_before
    counts = store.counts()
    store.close()
    return {
        "events_by_domain": {d: report.events_by_domain.get(d, 0) for d in DOMAINS},
        "alerts_by_domain": {d: counts["alerts_by_domain"].get(d, 0) for d in DOMAINS},
        "alerts_total": counts["alerts_total"],
        "alerts_emitted": watch.count,
        "alerts_repeated": watch.count - len(watch.keys),
        "alerts_conflicting": watch.conflicts,
        "alerts_new": counts["alerts_total"] - stored_before,
        "incidents": counts["incidents"],
        "dead_letters": dead_letters,
        "first_alert_seconds": (round(watch.first_at - started, 3)
                                if watch.first_at is not None else None),
        "elapsed_seconds": round(time.monotonic() - started, 3),
        "store_url": store.url,
        "broker": settings.kafka_bootstrap or "embedded",
    }
