"""Ingest: validate raw one-per-message envelopes and frame them into micro-batches.

Faust costs ~110 µs per Kafka message, so this stage reads the public ``raw.*`` topics
with aiokafka's batched ``getmany`` (hundreds of thousands of messages/s), validates each
record, dead-letters the bad ones with their locator (``topic/partition@offset``), and
writes valid envelopes to the internal ``events`` topic as MessagePack frames of up to
``batch_max_events``. Envelopes are routed by ``entity_id`` so one entity's events keep
their order on one ``events`` partition. Offsets are committed only after the frames are
acknowledged: at-least-once, made exactly-once in effect by deterministic ids downstream.

Example:
    >>> from citywatch.streams.settings import StreamSettings
    >>> ingest = RawIngest(StreamSettings(kafka_bootstrap="127.0.0.1:9092"))  # doctest: +SKIP
    >>> faust.Worker(app, ingest).execute_from_commandline()            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from mode import Service

from citywatch.streams.batch import encode_batch
from citywatch.streams.deadletter import DeadLetter, encode_deadletter
from citywatch.streams.envelope import Envelope, EnvelopeError, decode_envelope
from citywatch.streams.metrics import WorkerMetrics
from citywatch.streams.settings import StreamSettings

log = logging.getLogger(__name__)


def ingest_group(settings: StreamSettings) -> str:
    """Consumer group of the ingest stage."""
    return f"{settings.app_id}-ingest"


def split_records(records: list[ConsumerRecord[bytes, bytes]], *,
                  max_ahead: float = 86400.0,
                  floor: datetime = datetime(1970, 1, 1, tzinfo=UTC),
                  now: datetime | None = None,
                  ) -> tuple[list[tuple[Envelope, ConsumerRecord[bytes, bytes]]],
                             list[DeadLetter]]:
    """Validate raw records into (envelope, record) pairs and dead letters: nothing is
    dropped, and no record — whatever its bytes — raises. Events stamped more than
    ``max_ahead`` seconds after ``now`` (when ingest received them) or before ``floor``
    are dead-lettered, so one bad clock cannot move stream time."""
    good: list[tuple[Envelope, ConsumerRecord[bytes, bytes]]] = []
    bad: list[DeadLetter] = []
    now = now or datetime.now(UTC)
    latest = now + timedelta(seconds=max_ahead)
    for rec in records:
        locator = f"{rec.topic}/{rec.partition}@{rec.offset}"
        raw = rec.value or b""
        try:
            envelope = decode_envelope(raw, locator=locator)
            if envelope.time > latest:
                raise EnvelopeError(f"{envelope.time.isoformat()} is more than "
                                    f"{max_ahead:g} s ahead of the time received "
                                    f"({now.isoformat()})", field="time", locator=locator)
            if envelope.time < floor:
                raise EnvelopeError(f"{envelope.time.isoformat()} is before the floor "
                                    f"{floor.isoformat()}", field="time", locator=locator)
            good.append((envelope, rec))
        except EnvelopeError as exc:
            bad.append(DeadLetter.from_error(exc, stage="ingest", source=rec.topic,
                                             locator=locator, raw=_text(raw)))
        except Exception as exc:  # any bytes: a dead letter, never a crash
            bad.append(DeadLetter(stage="ingest", source=rec.topic, locator=locator,
                                  error=f"unreadable record: {type(exc).__name__}: {exc}",
                                  raw=_text(raw)))
    return good, bad


def _text(raw: bytes, limit: int = 100_000) -> str:
    """The raw record for a dead letter: decoded leniently, cut at ``limit`` characters."""
    text = raw[:limit * 4].decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + f"…[{len(raw)} bytes]"


def frames_of(pairs: list[tuple[Envelope, ConsumerRecord[bytes, bytes]]],
              ) -> tuple[list[bytes], list[DeadLetter]]:
    """One frame for ``pairs``; an envelope that cannot be framed (it passed validation
    but its geometry breaks the frame's location step) is dead-lettered alone."""
    def encode(chunk: list[tuple[Envelope, ConsumerRecord[bytes, bytes]]]) -> bytes:
        return encode_batch([env for env, _ in chunk],
                            [f"{rec.topic}/{rec.partition}" for _, rec in chunk],
                            [rec.offset for _, rec in chunk],
                            raws=[rec.value or b"" for _, rec in chunk])
    if not pairs:
        return [], []
    try:
        return [encode(pairs)], []
    except Exception:  # find the one that fails, keep the others
        kept, letters = [], []
        for pair in pairs:
            try:
                encode([pair])
                kept.append(pair)
            except Exception as exc:
                rec = pair[1]
                locator = f"{rec.topic}/{rec.partition}@{rec.offset}"
                letters.append(DeadLetter(
                    stage="ingest", source=rec.topic, locator=locator,
                    error=f"cannot frame: {type(exc).__name__}: {exc}",
                    raw=_text(rec.value or b"")))
        return ([encode(kept)] if kept else []), letters


class RawIngest(Service):
    """The ``raw.* → events`` stage as a mode service, run beside the Faust app."""

    def __init__(self, settings: StreamSettings, bootstrap: str,
                 metrics: WorkerMetrics | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.bootstrap = bootstrap
        self.topics = settings.topics
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    async def on_start(self) -> None:
        timeout_ms = int(self.settings.broker_session_timeout * 1000)
        self.consumer = AIOKafkaConsumer(
            *self.topics.raw_all, bootstrap_servers=self.bootstrap,
            group_id=ingest_group(self.settings), enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=timeout_ms,
            heartbeat_interval_ms=max(100, timeout_ms // 6),
            rebalance_timeout_ms=timeout_ms, max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            client_id="citywatch-ingest")
        self.producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks=1, linger_ms=2,
            max_batch_size=1024 * 1024, max_request_size=16 * 1024 * 1024,
            client_id="citywatch-ingest")
        await self.producer.start()

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    @Service.task
    async def _pump(self) -> None:
        assert self.consumer is not None
        # joining the group happens here, not in on_start, so the Faust app starts (and
        # joins its own group) in parallel instead of waiting for this join
        await self.consumer.start()
        size = self.settings.batch_max_events
        committing: asyncio.Task[None] | None = None
        while not self.should_stop:
            fetched = await self.consumer.getmany(
                timeout_ms=max(1, self.settings.batch_max_wait_ms) * 5, max_records=size * 8)
            records = [r for batch in fetched.values() for r in batch]
            if not records:
                continue
            acks = await self.forward(records)
            offsets = {tp: batch[-1].offset + 1 for tp, batch in fetched.items() if batch}
            # the next fetch overlaps with waiting for these acks; commits stay in order
            committing = asyncio.ensure_future(self._commit_after(committing, acks, offsets))
        if committing is not None:
            await committing

    async def _commit_after(self, previous: asyncio.Task[None] | None,
                            acks: list[asyncio.Future[Any]],
                            offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` once their frames are acknowledged (and earlier commits)."""
        assert self.consumer is not None
        if previous is not None:
            await previous
        await asyncio.gather(*acks)
        await self.consumer.commit(offsets)

    async def forward(self, records: list[ConsumerRecord[bytes, bytes]],
                      ) -> list[asyncio.Future[Any]]:
        """Send valid envelopes as frames and bad records to dead-letter; returns the
        acknowledgement futures."""
        assert self.producer is not None
        good, bad = split_records(records,
                                  max_ahead=self.settings.event_time_max_ahead_seconds,
                                  floor=self.settings.event_time_floor)
        refused = len(bad)
        parts = sorted(await self.producer.partitions_for(self.topics.events))
        by_partition: dict[int, list[tuple[Envelope, ConsumerRecord[bytes, bytes]]]] = \
            defaultdict(list)
        for env, rec in good:
            by_partition[parts[zlib.crc32(env.entity_id.encode()) % len(parts)]].append(
                (env, rec))
        size = self.settings.batch_max_events
        futures = []
        for partition, pairs in by_partition.items():
            for start in range(0, len(pairs), size):
                frames, unframed = frames_of(pairs[start:start + size])
                bad.extend(unframed)
                for frame in frames:
                    futures.append(await self.producer.send(self.topics.events, frame,
                                                            partition=partition))
        unframed = len(bad) - refused
        counted = self.metrics.records
        counted.labels(stage="ingest", direction="in").inc(len(records))
        counted.labels(stage="ingest", direction="out").inc(len(good) - unframed)  # events
        self.metrics.dead_letters.labels(stage="ingest").inc(len(bad))
        for letter in bad:
            log.warning("dead-letter %s: %s%s", letter.locator,
                        f"field '{letter.field}': " if letter.field else "", letter.error)
            futures.append(await self.producer.send(
                self.topics.deadletter, encode_deadletter(letter), key=letter.source.encode()))
        return futures
