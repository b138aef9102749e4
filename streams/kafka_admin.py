"""Kafka administration: topic creation, end offsets and consumer-group lag.

End offsets are read back from the log itself: the embedded broker reports a partition's
high watermark as the *base* offset of its last record batch + 1, so a batch of N records
would hide N-1 of them from a plain ``end_offsets`` call. Fetching from that offset - 1
returns the whole last batch, whose last offset + 1 is the true end (on real Kafka the
two agree).

Example:
    >>> with KafkaAdmin("127.0.0.1:9092") as admin:        # doctest: +SKIP
    ...     admin.ensure_topics(["city.alerts"], partitions=1)
    ...     admin.group_lag("citywatch", ["city.alerts"])
    0
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable
from types import TracebackType

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError


class KafkaAdmin:
    """One admin client and one offsets consumer, reused for many queries."""

    def __init__(self, bootstrap: str, *, timeout_ms: int = 30_000) -> None:
        self._admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="citywatch-admin",
                                       request_timeout_ms=timeout_ms,
                                       bootstrap_timeout_ms=timeout_ms)
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap,
                                       client_id="citywatch-offsets",
                                       bootstrap_timeout_ms=timeout_ms,
                                       request_timeout_ms=timeout_ms + 1000,
                                       auto_offset_reset="earliest",
                                       allow_auto_create_topics=False)

    def ensure_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        """Create the topics that do not exist yet."""
        existing = set(self._admin.list_topics())
        missing = [NewTopic(name, partitions, 1) for name in names if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                self._admin.create_topics(missing)

    def partition_counts(self, names: Iterable[str]) -> dict[str, int]:
        """Partitions of each of ``names`` that exists on the broker (fresh metadata)."""
        wanted = set(names)
        existing = wanted & set(self._admin.list_topics())
        if not existing:
            return {}
        return {t["name"]: len(t["partitions"])
                for t in self._admin.describe_topics(sorted(existing))
                if t.get("error_code", 0) == 0}

    def layout_problems(self, names: Iterable[str], partitions: int,
                        any_count: Iterable[str] = ()) -> list[str]:
        """What is wrong with topics ``names`` on the broker: each missing one, and each
        with another partition count than ``partitions`` (e.g. auto-created by a client
        with the broker's default) unless it is one of ``any_count``."""
        names = list(names)
        free = set(any_count)
        counts = self.partition_counts(names)
        problems = [f"topic {name} does not exist" for name in names if name not in counts]
        problems += [f"topic {name} has {count} partition(s), {partitions} configured "
                     f"(CITYWATCH_TOPIC_PARTITIONS)"
                     for name, count in counts.items() if count != partitions
                     and name not in free]
        return problems

    def reported_end_offsets(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """The broker's high watermark of every partition of ``topics`` (cheap; may be
        below the true end on the embedded broker, see :meth:`end_offsets`)."""
        parts = [TopicPartition(t, p) for t in topics
                 for p in (self._consumer.partitions_for_topic(t) or ())]
        return dict(self._consumer.end_offsets(parts)) if parts else {}

    def end_offsets(self, topics: Iterable[str]) -> dict[TopicPartition, int]:
        """The offset after the last record of every partition of ``topics``."""
        parts = [TopicPartition(t, p) for t in topics
                 for p in (self._consumer.partitions_for_topic(t) or ())]
        if not parts:
            return {}
        reported = dict(self._consumer.end_offsets(parts))
        probe = [tp for tp, end in reported.items() if end > 0]
        if not probe:
            return reported
        self._consumer.assign(probe)
        for tp in probe:
            self._consumer.seek(tp, reported[tp] - 1)
        true_end = dict(reported)
        pending = set(probe)
        for _ in range(20):
            for tp, records in self._consumer.poll(timeout_ms=100, max_records=100000).items():
                if records:
                    true_end[tp] = max(true_end[tp], records[-1].offset + 1)
                    pending.discard(tp)
            if not pending:
                break
        return true_end

    def count_since(self, topic: str, since_ms: int) -> int:
        """How many records of ``topic`` carry a timestamp at or after ``since_ms``
        (found by bisecting each partition's offsets on record timestamps: the embedded
        broker answers a time-based offset lookup with the log start)."""
        total = 0
        for tp, end in self.end_offsets([topic]).items():
            low = self._consumer.beginning_offsets([tp]).get(tp, 0)
            high = end
            while low < high:
                middle = (low + high) // 2
                stamp = self._timestamp_at(tp, middle)
                if stamp is None or stamp >= since_ms:
                    high = middle
                else:
                    low = middle + 1
            total += end - low
        return total

    def _timestamp_at(self, tp: TopicPartition, offset: int) -> int | None:
        """The timestamp of the first record at or after ``offset`` (None: none came)."""
        self._consumer.assign([tp])
        self._consumer.seek(tp, offset)
        for _ in range(10):
            records = self._consumer.poll(timeout_ms=200, max_records=1).get(tp, [])
            if records:
                return int(records[0].timestamp)
        return None

    def read_partition(self, topic: str, partition: int, timeout_s: float = 60.0,
                       ) -> list[tuple[bytes | None, bytes]]:
        """Every ``(key, value)`` of one partition, from the start to its true end."""
        tp = TopicPartition(topic, partition)
        end = self.end_offsets([topic]).get(tp, 0)
        if end == 0:
            return []
        self._consumer.assign([tp])
        self._consumer.seek_to_beginning(tp)
        records: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout_s
        # the consumer's position, not the last record's offset: a log that does not
        # start at 0, or has gaps, still reaches its end
        while self._consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}/{partition}: at {self._consumer.position(tp)} "
                                   f"of {end}")
            for record in self._consumer.poll(timeout_ms=200, max_records=100000).get(tp, []):
                if record.offset < end:
                    records.append((record.key, record.value))
        return records

    def committed(self, group: str) -> dict[TopicPartition, int]:
        """Offsets committed by consumer ``group``."""
        offsets = self._admin.list_group_offsets({group: None}).get(group, {})
        return {tp: meta.offset for tp, meta in offsets.items()}

    def group_lag(self, group: str, topics: Iterable[str]) -> int:
        """Messages in ``topics`` not yet committed by ``group``."""
        ends = self.end_offsets(topics)
        done = self.committed(group)
        return sum(max(0, end - max(done.get(tp, 0), 0)) for tp, end in ends.items())

    def close(self) -> None:
        self._consumer.close()
        self._admin.close()

    def __enter__(self) -> KafkaAdmin:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def broker_problem(bootstrap: str, timeout_s: float = 8.0) -> str | None:
    """Why no Kafka broker at ``bootstrap`` answers a metadata request within
    ``timeout_s`` (``None``: one does)."""
    timeout_ms = int(timeout_s * 1000)
    try:
        client = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="citywatch-check",
                                  request_timeout_ms=timeout_ms,
                                  bootstrap_timeout_ms=timeout_ms)
        try:
            client.list_topics()
        finally:
            client.close()
    except KafkaError as exc:
        said = str(exc).splitlines()[0] if str(exc) else ""
        return said if said.startswith(type(exc).__name__) else f"{type(exc).__name__}: {said}"
    return None


def ensure_topics(bootstrap: str, names: Iterable[str], partitions: int = 1) -> None:
    """Create the topics that do not exist yet (one-shot)."""
    with KafkaAdmin(bootstrap) as admin:
        admin.ensure_topics(names, partitions)


def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every message value of every partition of ``topic``, start to end, partition by
    partition (a module-level function, so it can be handed to worker processes)."""
    with KafkaAdmin(bootstrap) as admin:
        partitions = sorted(tp.partition for tp in admin.end_offsets([topic]))
        return [value for partition in partitions
                for _, value in admin.read_partition(topic, partition)]
