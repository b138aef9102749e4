"""Where connector output goes: envelopes to ``raw.<domain>``, rejects to ``deadletter``.

Example:
    >>> from citywatch.streams.topics import TopicNames
    >>> with KafkaSink("127.0.0.1:9092", TopicNames("city.")) as sink:  # doctest: +SKIP
    ...     sink.send(envelope)
    ...     sink.flush()
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

from confluent_kafka import KafkaError, Producer

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


class DeliveryError(RuntimeError):
    """The broker did not acknowledge some messages."""


class KafkaSink:
    """A batching Kafka producer (librdkafka) for connector output, one record per message.

    Envelopes are keyed by ``entity_id`` so one entity's events stay in order on one
    partition. :meth:`flush` returns only when every message sent so far is acknowledged,
    and raises :class:`DeliveryError` if any was not: checkpoints are taken after it.
    """

    def __init__(self, bootstrap: str, topics: TopicNames, *, linger_ms: int = 5) -> None:
        self.topics = topics
        self._failures: list[str] = []
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

    def _delivered(self, error: KafkaError | None, message: object) -> None:
        if error is not None:
            self._failures.append(str(error))

    def _produce(self, topic: str, value: bytes, key: bytes) -> None:
        while True:
            try:
                self._producer.produce(topic, value, key)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.05)
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
