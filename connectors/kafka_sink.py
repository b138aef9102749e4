"""Where connector output goes: envelopes to ``raw.<domain>``, rejects to ``deadletter``.

Example:
    >>> from citywatch.streams.topics import TopicNames
    >>> with KafkaSink("127.0.0.1:9092", TopicNames("city.")) as sink:  # doctest: +SKIP
    ...     report = pump(source, sink)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

from kafka import KafkaProducer

from citywatch.connectors.base import Source
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


class KafkaSink:
    """A batching Kafka producer for connector output (one record per message).

    Envelopes are keyed by ``entity_id`` so one entity's events stay in order on one
    partition.
    """

    def __init__(self, bootstrap: str, topics: TopicNames, *, linger_ms: int = 10) -> None:
        self.topics = topics
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks=1, linger_ms=linger_ms,
            batch_size=256 * 1024, max_request_size=8 * 1024 * 1024,
            client_id="citywatch-connector")

    def send(self, item: Envelope | DeadLetter) -> None:
        if isinstance(item, Envelope):
            self._producer.send(self.topics.raw(item.domain), value=encode_envelope(item),
                                key=item.entity_id.encode())
        else:
            self._producer.send(self.topics.deadletter, value=encode_deadletter(item),
                                key=item.source.encode())

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.flush()
        self._producer.close()

    def __enter__(self) -> KafkaSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def pump(source: Source, sink: KafkaSink, report: PumpReport | None = None) -> PumpReport:
    """Run ``source`` to the end (or until stopped), sending everything to ``sink``."""
    report = report or PumpReport()
    for item in source.run():
        sink.send(item)
        if isinstance(item, Envelope):
            report.events_by_domain[item.domain] += 1
        else:
            report.dead_letters += 1
    sink.flush()
    return report
