"""Watch a topic from its current end: count new messages and note when the first came.

Example:
    >>> with TopicWatch("127.0.0.1:9092", "citywatch.alerts") as watch:  # doctest: +SKIP
    ...     ...
    >>> watch.count, watch.first_at                                        # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import msgspec
from kafka import KafkaConsumer, TopicPartition


class TopicWatch:
    """A background consumer (no group) reading ``topic`` from the offsets at start."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.count = 0
        self.keys: dict[bytes | None, bytes] = {}  # key -> first value seen
        self.conflicts = 0  # one key, different source events (must never happen)
        self.first_at: float | None = None
        self._stop = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap,
                                       client_id="citywatch-watch", enable_auto_commit=False)
        partitions = self._consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in partitions]
        self._consumer.assign(tps)
        ends = self._consumer.end_offsets(tps)
        for tp in tps:
            self._consumer.seek(tp, ends.get(tp, 0))
        self._thread = threading.Thread(target=self._run, name=f"watch-{topic}", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            batches = self._consumer.poll(timeout_ms=100)
            got = sum(len(records) for records in batches.values())
            if got and self.first_at is None:
                self.first_at = time.monotonic()
            for records in batches.values():
                for record in records:
                    self.keys.setdefault(record.key, record.value)
                    if self.keys[record.key] != record.value and self._differs(
                            self.keys[record.key], record.value):
                        self.conflicts += 1
            self.count += got

    @staticmethod
    def _differs(first: bytes, again: bytes) -> bool:
        """Whether two messages under one key are about different things (their
        ``source_event_ids`` differ); a re-raised alert differs only in ``raised_at``."""
        def sources(value: bytes) -> object:
            try:
                return msgspec.json.decode(value).get("source_event_ids")
            except (msgspec.DecodeError, AttributeError):
                return value
        return sources(first) != sources(again)

    def start(self) -> TopicWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()

    def __enter__(self) -> TopicWatch:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
