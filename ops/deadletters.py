"""Reading the dead-letter topic back: the newest N, optionally following new ones.

Example:
    >>> for letter in tail("127.0.0.1:9092", "citywatch.deadletter", 10):  # doctest: +SKIP
    ...     print(letter.locator, letter.error)
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
from kafka import KafkaConsumer, TopicPartition

from citywatch.streams.deadletter import DeadLetter, decode_deadletter
from citywatch.streams.kafka_admin import KafkaAdmin


def tail(bootstrap: str, topic: str, count: int, follow: bool = False) -> Iterator[DeadLetter]:
    """The newest ``count`` dead letters (oldest first), then new ones if ``follow``."""
    with KafkaAdmin(bootstrap) as admin:
        ends = admin.end_offsets([topic])
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             client_id="citywatch-deadletter-tail")
    try:
        tps = list(ends) or [TopicPartition(topic, 0)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends.get(tp, 0) - count))
        backlog: list[DeadLetter] = []
        remaining = {tp: end for tp, end in ends.items() if end > 0}
        while remaining:
            polled = consumer.poll(timeout_ms=500)
            if not polled:
                break
            for tp, records in polled.items():
                for rec in records:
                    if rec.offset < remaining.get(tp, 0):
                        backlog.append(_decode(rec.value, rec.offset))
                if records and records[-1].offset + 1 >= remaining.get(tp, 0):
                    remaining.pop(tp, None)
        backlog.sort(key=lambda d: d.time)
        yield from backlog[-count:]
        while follow:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    yield _decode(rec.value, rec.offset)
    finally:
        consumer.close()


def _decode(value: bytes, offset: int) -> DeadLetter:
    try:
        return decode_deadletter(value)
    except msgspec.MsgspecError as exc:
        return DeadLetter(stage="?", source="?", locator=f"deadletter@{offset}",
                          error=f"unreadable dead letter: {exc}",
                          raw=value.decode("utf-8", "replace"))
