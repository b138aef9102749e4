"""Where connector output goes: envelopes to ``raw.<domain>``, rejects to ``deadletter``.

Example:
    >>> from citywatch.streams.topics import TopicNames
    >>> with KafkaSink("127.0.0.1:9092", TopicNames("city.")) as sink:  # doctest: +SKIP
    ...     sink.send(envelope)
    ...     sink.flush()
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from citywatch.streams.deadletter import DeadLetter, encode_deadletter
from citywatch.streams.envelope import Envelope, encode_envelope
from citywatch.streams.topics import TopicNames


@dataclass
class PumpReport:
    """What a run of one or more sources produced."""

    events_by_domain: Counter[str] = field(default_factory=Counter)
    dead_letters: int = 0
    skipped: int = 0

    @property
    def events(self) -> int:
        return sum(self.events_by_domain.values())

    def as_dict(self) -> dict[str, object]:
        return {"events_by_domain": dict(self.events_by_domain), "events": self.events,
                "dead_letters": self.dead_letters, "skipped_duplicates": self.skipped}

    def prometheus(self, connector: str) -> str:
        """The counts in Prometheus text exposition format."""
        lines = ["# HELP citywatch_connector_records_total Records a connector handled.",
                 "# TYPE citywatch_connector_records_total counter"]
        for domain, count in sorted(self.events_by_domain.items()):
            lines.append(f'citywatch_connector_records_total{{connector="{connector}",'
                         f'outcome="valid",domain="{domain}"}} {count}')
        lines.append(f'citywatch_connector_records_total{{connector="{connector}",'
                     f'outcome="rejected"}} {self.dead_letters}')
        lines.append(f'citywatch_connector_records_total{{connector="{connector}",'
                     f'outcome="duplicate_skipped"}} {self.skipped}')
        return "\n".join(lines) + "\n"


MISSING_TOPIC = frozenset({KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC,
                           KafkaError.UNKNOWN_TOPIC_OR_PART})
RESEND_ROUNDS = 5
TOPIC_VISIBLE_SECONDS = 30.0


class DeliveryError(RuntimeError):
    """The broker did not acknowledge some messages."""


class KafkaSink:
    """A batching Kafka producer (librdkafka) for connector output, one record per message.

    Envelopes are keyed by ``entity_id`` so one entity's events stay in order on one
    partition. :meth:`flush` returns only when every message sent so far is acknowledged,
    and raises :class:`DeliveryError` if any was not: checkpoints are taken after it.

    With ``recreate``, a topic the broker lost (a restarted memory-only broker) is
    created again and what it refused is sent again at the next flush: nothing is lost,
    but those messages then follow the ones sent after the topic was back.
    """

    def __init__(self, bootstrap: str, topics: TopicNames, *, linger_ms: int = 5,
                 recreate: Callable[[list[str]], None] | None = None) -> None:
        self.topics = topics
        self.recreate = recreate
        self._failures: list[str] = []
        self._missing: list[tuple[str, bytes, bytes]] = []
        self._producer = Producer({
            "bootstrap.servers": bootstrap, "client.id": "citywatch-connector", "acks": 1,
            # topics are created by citywatch with the configured partition counts; a
            # broker that lost them (a restarted embedded one) must not re-create them
            # with its defaults
            "allow.auto.create.topics": False,
            "enable.idempotence": False, "linger.ms": linger_ms,
            "batch.size": 1_000_000, "queue.buffering.max.messages": 1_000_000,
            "message.max.bytes": 8 * 1024 * 1024, "log_level": 3,
            "delivery.report.only.error": True, "on_delivery": self._delivered})
        self._sent = 0

    def _delivered(self, error: KafkaError | None, message: Any) -> None:
        if error is None:
            return
        if self.recreate is not None and error.code() in MISSING_TOPIC:
            # the broker lost the topic (a restarted embedded broker): send it again
            # once citywatch has created the topic again
            self._missing.append((message.topic(), message.value(), message.key()))
        else:
            self._failures.append(str(error))

    def _produce(self, topic: str, value: bytes, key: bytes) -> None:
        recreated_at: float | None = None
        while True:
            try:
                self._producer.produce(topic, value, key)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.05)
            except KafkaException as exc:
                # the producer's metadata says the topic is gone (a restarted embedded
                # broker): create it again, then send once the producer sees it
                error = exc.args[0]
                gone = self.recreate is not None and error.code() in MISSING_TOPIC
                if gone and recreated_at is None:
                    assert self.recreate is not None
                    self.recreate([topic])
                    recreated_at = time.monotonic()
                elif not gone or time.monotonic() - recreated_at > TOPIC_VISIBLE_SECONDS:
                    raise DeliveryError(f"{topic}: {error.str()}") from exc
                self._producer.poll(0.2)
        self._sent += 1
        if self._sent % 10_000 == 0:
            self._producer.poll(0)

    def send(self, item: Envelope | DeadLetter) -> None:
        if isinstance(item, Envelope):
            self._produce(self.topics.raw(item.domain), encode_envelope(item),
                          item.entity_id.encode())
        else:
            self._produce(self.topics.deadletter, encode_deadletter(item),
                          item.source.encode())

    def flush(self, timeout: float = 60.0) -> None:
        remaining = self._producer.flush(timeout)
        for _ in range(RESEND_ROUNDS):
            if not self._missing or remaining:
                break
            assert self.recreate is not None
            # re-created first: should that fail, the messages stay owed
            self.recreate(sorted({topic for topic, _, _ in self._missing}))
            missing, self._missing = self._missing, []
            for topic, value, key in missing:
                self._produce(topic, value, key)
            remaining = self._producer.flush(timeout)
        if self._missing:
            self._failures += [f"topic {t} missing on the broker" for t, _, _ in self._missing]
            self._missing = []
        if remaining or self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError(f"{remaining} message(s) unsent, {len(failures)} failed"
                                + (f": {failures[0]}" if failures else ""))

    def close(self) -> None:
        """Flush, then release the producer (its delivery callback points back here)."""
        try:
            self.flush()
        finally:
            self._producer = None  # type: ignore[assignment]

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
