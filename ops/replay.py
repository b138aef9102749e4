"""Replaying history: events from feed files or from a deployment's own Kafka topics,
bounded by event time, paced at N× real time (by event time), into production or into a
sandbox that production never sees.

A sandbox ``NAME`` has its own topic prefix (``<prefix>sandbox.NAME.``), consumer group
(``<app_id>-sandbox-NAME``), data directory and SQLite store
(``<data_dir>/sandboxes/NAME/citywatch.db``), and exports CAP with status ``Exercise``.

Example:
    >>> from citywatch.ops.settings import Settings
    >>> sandbox = sandbox_settings(Settings(topic_prefix="city.", data_dir="/srv/cw"), "q3")
    >>> sandbox.topic_prefix, sandbox.app_id, sandbox.cap_status
    ('city.sandbox.q3.', 'citywatch-sandbox-q3', 'Exercise')
    >>> sandbox.database_url
    'sqlite:////srv/cw/sandboxes/q3/citywatch.db'
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from citywatch.connectors.kafka_sink import KafkaSink, PumpReport
from citywatch.ops.settings import Settings
from citywatch.streams.batch import decode_frame
from citywatch.streams.envelope import Envelope, EnvelopeError, decode_envelope
from citywatch.streams.kafka_admin import KafkaAdmin
from citywatch.streams.topics import TopicNames

SANDBOX_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
Progress = Callable[[dict[str, Any]], None]


def sandbox_settings(settings: Settings, name: str) -> Settings:
    """The settings of sandbox ``name`` (see the module docstring)."""
    if not SANDBOX_NAME.match(name):
        raise ValueError(f"sandbox name {name!r}: lower-case letters, digits, '-' and '_', "
                         "at most 40")
    folder = settings.data_dir / "sandboxes" / name
    return settings.model_copy(update={
        "topic_prefix": f"{settings.topic_prefix}sandbox.{name}.",
        "app_id": f"{settings.app_id}-sandbox-{name}", "data_dir": folder,
        "database_url": f"sqlite:///{folder / 'citywatch.db'}", "cap_status": "Exercise"})


def events_from_kafka(admin: KafkaAdmin, topics: TopicNames, *, since: datetime | None,
                      until: datetime | None, source: str = "raw",
                      ) -> tuple[list[Envelope], int]:
    """The envelopes a deployment's Kafka topics hold with an event time in
    [since, until], each once (by id), in event-time order; and how many records could
    not be read. ``source`` is ``raw`` (the ``raw.*`` topics the connectors wrote) or
    ``events`` (the internal topic of validated events ingest framed)."""
    if source not in KAFKA_SOURCES:
        raise ValueError(f"source {source!r}: one of {', '.join(KAFKA_SOURCES)}")
    read = decode_envelope if source == "raw" else _frame_events
    names = topics.raw_all if source == "raw" else [topics.events]
    found: dict[str, Envelope] = {}
    unreadable = 0
    for topic, partitions in admin.partition_counts(names).items():
        for partition in range(partitions):
            for _, value in admin.read_partition(topic, partition):
                try:
                    events = read(value)
                except (EnvelopeError, msgspec.DecodeError, msgspec.ValidationError):
                    unreadable += 1  # it went to the dead-letter topic the first time
                    continue
                for event in events if isinstance(events, list) else [events]:
                    if (since is None or event.time >= since) and (
                            until is None or event.time <= until):
                        found.setdefault(event.id, event)
    return sorted(found.values(), key=lambda e: (e.time, e.id)), unreadable


KAFKA_SOURCES = ("raw", "events")


def _frame_events(value: bytes) -> list[Envelope]:
    return decode_frame(value).events


def paced_produce(events: Sequence[Envelope], sink: KafkaSink, *,
                  speed: float | None, report: PumpReport,
                  progress: Progress | None = None) -> float:
    """Send ``events`` (in event-time order) through ``sink``, each at its event time
    divided by ``speed`` after the first (``None``: as fast as possible); returns the
    seconds it took. Flushes at least twice a second, so what was sent is acknowledged;
    ``progress`` then sees events sent, the event-time position, the rate and an ETA."""
    started = time.monotonic()
    total = len(events)
    last = events[-1].time if events else None
    first: datetime | None = None
    flushed = started
    for event in events:
        if first is None:
            first = event.time
        if speed is not None:
            due = started + (event.time - first).total_seconds() / speed
            wait = due - time.monotonic()
            if wait > 0:
                sink.flush()
                time.sleep(wait)
        sink.send(event)
        report.events_by_domain[event.domain] += 1
        if time.monotonic() - flushed > 0.5:
            sink.flush()
            flushed = time.monotonic()
            if progress is not None:
                elapsed = flushed - started
                rate = report.events / elapsed if elapsed else 0.0
                left = ((last - event.time).total_seconds() / speed
                        if speed is not None and last is not None
                        else (total - report.events) / rate if rate else 0.0)
                progress({"events": report.events, "total": total,
                          "event_time": event.time.isoformat(),
                          "seconds": round(elapsed, 1), "rate": round(rate),
                          "eta_seconds": round(left, 1)})
    sink.flush()
    return time.monotonic() - started
