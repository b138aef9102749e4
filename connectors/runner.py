"""Running a connector: a dry run to stdout, or into Kafka with checkpoints.

Exactly once by id across restarts: every second (and at the end) the runner flushes the
producer and saves the source's checkpoint together with the end offsets of the topics it
writes. A restarted run restores the checkpoint, reads what reached those topics after the
saved offsets (records produced after the last checkpoint, before the stop), and skips
those ids instead of producing them again.

Example:
    >>> import io
    >>> from citywatch.connectors.base import Source
    >>> class Empty(Source):
    ...     domain = "traffic"
    ...     def run(self):
    ...         return iter(())
    >>> dry_run(Empty("empty"), io.StringIO(), io.StringIO())
    0
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import msgspec
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from citywatch.connectors.base import Source
from citywatch.connectors.kafka_sink import KafkaSink, PumpReport
from citywatch.streams.deadletter import DeadLetter, decode_deadletter
from citywatch.streams.envelope import Envelope, encode_envelope
from citywatch.streams.kafka_admin import KafkaAdmin
from citywatch.streams.topics import TopicNames


def describe(letter: DeadLetter) -> str:
    """One line for a dead letter: ``locator: field 'x': reason``."""
    where = f"field '{letter.field}': " if letter.field else ""
    return f"{letter.locator}: {where}{letter.error}"


def dry_run(source: Source, out: IO[str], err: IO[str]) -> int:
    """Print envelopes as JSON Lines on ``out`` and rejects on ``err``, without a broker.

    Returns the exit status: 0 when every record was valid, 1 otherwise.
    """
    rejected = 0
    try:
        for item in source.run():
            if source.wants_checkpoint:
                source.checkpoint()
            if item is None:
                continue
            if isinstance(item, Envelope):
                out.write(encode_envelope(item).decode() + "\n")
            else:
                rejected += 1
                err.write(f"rejected {describe(item)}\n")
        out.flush()
        source.checkpoint()
    finally:
        source.close()
    return 1 if rejected else 0


def item_key(item: Envelope | DeadLetter) -> str:
    """What identifies a produced item across restarts."""
    if isinstance(item, Envelope):
        return item.id
    return f"deadletter\x1f{item.source}\x1f{item.locator}"


@dataclass
class Checkpoint:
    """A source's position plus the topic offsets that position was saved at."""

    state: dict[str, Any] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(data.get("state", {}), data.get("offsets", {}))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"state": self.state, "offsets": self.offsets}))
        os.replace(tmp, path)


def _produced_since(bootstrap: str, offsets: dict[str, int], ends: dict[str, int],
                    source: str) -> set[str]:
    """Keys of this source's items between ``offsets`` and ``ends`` (topic/partition)."""
    wanted = {k: (offsets.get(k, 0), end) for k, end in ends.items() if end > offsets.get(k, 0)}
    if not wanted:
        return set()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             client_id="citywatch-checkpoint")
    seen: set[str] = set()
    try:
        tps = {k: TopicPartition(k.rsplit("/", 1)[0], int(k.rsplit("/", 1)[1]))
               for k in wanted}
        consumer.assign(list(tps.values()))
        for key, tp in tps.items():
            consumer.seek(tp, wanted[key][0])
        remaining = dict(wanted)
        deadline = time.monotonic() + 60
        while remaining and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                key = f"{tp.topic}/{tp.partition}"
                for rec in records:
                    if key not in remaining or rec.offset >= remaining[key][1]:
                        continue
                    seen.add(_key_of(rec.topic, rec.value, source))
                    if rec.offset + 1 >= remaining[key][1]:
                        remaining.pop(key)
    finally:
        consumer.close()
    seen.discard("")
    return seen


def _key_of(topic: str, value: bytes, source: str) -> str:
    try:
        if topic.endswith("deadletter"):
            letter = decode_deadletter(value)
            return item_key(letter) if letter.source == source else ""
        return msgspec.json.decode(value)["id"]
    except (msgspec.MsgspecError, KeyError, TypeError):
        return ""


class BrokerUnavailable(RuntimeError):
    """The broker did not answer the connector's topic or offset requests in time."""


T = TypeVar("T")


def _persisting(call: Callable[[], T], what: str, patience: float) -> T:
    """``call()``, retried every second for ``patience`` seconds while the broker is
    unreachable or answers with an error (it may be restarting); then
    :class:`BrokerUnavailable`."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return call()
        except KafkaError as exc:
            if time.monotonic() >= deadline:
                raise BrokerUnavailable(f"{what}: {type(exc).__name__} for "
                                        f"{patience:.0f} s") from exc
            time.sleep(1.0)


def produce(source: Source, bootstrap: str, topics: TopicNames, *,
            checkpoint_path: Path | None = None, checkpoint_every: float = 1.0,
            report: PumpReport | None = None, partitions: int = 1,
            patience: float = 120.0) -> PumpReport:
    """Run ``source`` into Kafka; with ``checkpoint_path``, resume exactly once by id.
    The topics it writes are created (with ``partitions`` each) when missing; never
    auto-created by the broker. A broker that stops answering topic or offset requests
    is waited for ``patience`` seconds, then :class:`BrokerUnavailable`."""
    report = report or PumpReport()
    watched = [*topics.raw_all, topics.deadletter]

    def recreate(lost: list[str]) -> None:
        _persisting(lambda: admin.ensure_topics(lost, partitions),
                    f"re-creating {', '.join(lost)}", patience)

    with KafkaAdmin(bootstrap) as admin, KafkaSink(bootstrap, topics,
                                                   recreate=recreate) as sink:
        admin.ensure_topics(watched, partitions)
        skip: set[str] = set()
        if checkpoint_path is not None and (saved := Checkpoint.load(checkpoint_path)):
            source.restore(saved.state)
            skip = _produced_since(bootstrap, saved.offsets, _ends(admin, watched),
                                   source.name)

        def save() -> None:
            sink.flush()
            state = source.checkpoint()
            if checkpoint_path is not None:
                ends = _persisting(lambda: _ends(admin, watched), "reading end offsets",
                                   patience)
                Checkpoint(state, ends).save(checkpoint_path)

        last = time.monotonic()
        try:
            for item in source.run():
                if item is not None and skip and item_key(item) in skip:
                    report.skipped += 1
                elif item is not None:
                    sink.send(item)
                    if isinstance(item, Envelope):
                        report.events_by_domain[item.domain] += 1
                    else:
                        report.dead_letters += 1
                if source.wants_checkpoint or time.monotonic() - last > checkpoint_every:
                    save()
                    last = time.monotonic()
            save()
        finally:
            source.close()
    return report


def _ends(admin: KafkaAdmin, topics: Iterable[str]) -> dict[str, int]:
    return {f"{tp.topic}/{tp.partition}": end for tp, end in admin.end_offsets(topics).items()}
