"""Ingest: validate raw one-per-message envelopes and frame them into micro-batches.

Faust costs ~110 µs per Kafka message, so this stage is not a Faust agent: it runs in
**its own process** (:func:`ingest_process`, started by the worker), a synchronous
librdkafka (confluent-kafka) loop that reads the public ``raw.*`` topics in batches,
validates each record, dead-letters the bad ones with their locator
(``topic/partition@offset``), and writes valid envelopes to the internal ``events``
topic as MessagePack frames of up to ``batch_max_events``. Envelopes are routed by
``entity_id`` so one entity's events keep their order on one ``events`` partition.
Offsets are committed only after the frames are acknowledged: at-least-once, made
exactly-once in effect by deterministic ids downstream. Its own process keeps the
decoding off the rules stage's core and its event loop.

Example:
    >>> from citywatch.streams.settings import StreamSettings
    >>> loop = IngestLoop(StreamSettings(), "127.0.0.1:9092")
    >>> loop.group
    'citywatch-ingest'
    >>> loop.run(stop=lambda: False)                                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NamedTuple, Protocol

import msgspec
import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from msgspec import Meta

from citywatch.streams.batch import encode_batch, epoch_seconds
from citywatch.streams.deadletter import DeadLetter, encode_deadletter
from citywatch.streams.envelope import Envelope, EnvelopeError, decode_envelope
from citywatch.streams.metrics import WorkerMetrics
from citywatch.streams.settings import StreamSettings
from citywatch.streams.stage_process import StageProcess, readable, stage_setup

log = logging.getLogger(__name__)


def ingest_group(settings: StreamSettings) -> str:
    """Consumer group of the ingest stage."""
    return f"{settings.app_id}-ingest"


class Record(Protocol):
    """A raw Kafka record (a :class:`RawRecord`, or any client's record)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class RawRecord(NamedTuple):
    """One raw message as ingest reads it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


Pair = tuple[Envelope, Record]


def _time_problem(envelope: Envelope, now: datetime, max_ahead: float,
                  floor: datetime) -> EnvelopeError | None:
    """Why ``envelope``'s time is refused (too far ahead of ``now``, before ``floor``)."""
    if envelope.time > now + timedelta(seconds=max_ahead):
        return EnvelopeError(f"{envelope.time.isoformat()} is more than {max_ahead:g} s "
                             f"ahead of the time received ({now.isoformat()})", field="time")
    if envelope.time < floor:
        return EnvelopeError(f"{envelope.time.isoformat()} is before the floor "
                             f"{floor.isoformat()}", field="time")
    return None


def split_records(records: Sequence[Record], *,
                  max_ahead: float = 86400.0,
                  floor: datetime = datetime(1970, 1, 1, tzinfo=UTC),
                  now: datetime | None = None,
                  ) -> tuple[list[Pair], list[DeadLetter]]:
    """Validate raw records into (envelope, record) pairs and dead letters: nothing is
    dropped, and no record — whatever its bytes — raises. Events stamped more than
    ``max_ahead`` seconds after ``now`` (when ingest received them) or before ``floor``
    are dead-lettered, so one bad clock cannot move stream time."""
    good: list[Pair] = []
    bad: list[DeadLetter] = []
    now = now or datetime.now(UTC)
    for rec in records:
        raw = rec.value or b""
        try:
            envelope = decode_envelope(raw)
            problem = _time_problem(envelope, now, max_ahead, floor)
            if problem is not None:
                raise problem
            good.append((envelope, rec))
        except EnvelopeError as exc:  # the locator is written only for the bad records
            bad.append(DeadLetter.from_error(exc, stage="ingest", source=rec.topic,
                                             locator=_locator(rec), raw=_text(raw)))
        except Exception as exc:  # any bytes: a dead letter, never a crash
            bad.append(DeadLetter(stage="ingest", source=rec.topic, locator=_locator(rec),
                                  error=f"unreadable record: {type(exc).__name__}: {exc}",
                                  raw=_text(raw)))
    return good, bad


Longitude = Annotated[float, Meta(ge=-180, le=180)]
Finite = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]


class PointGeometry(msgspec.Struct, tag_field="type", tag="Point",
                    forbid_unknown_fields=True, frozen=True, gc=False):
    """A GeoJSON Point exactly as :func:`~citywatch.streams.envelope.check_geometry`
    accepts it, checked by msgspec while decoding (an altitude, too, within ±180)."""

    coordinates: Annotated[list[Longitude], Meta(min_length=2, max_length=3)]

    def __post_init__(self) -> None:
        if not -90 <= self.coordinates[1] <= 90:
            raise ValueError("latitude out of range")


class PointEnvelope(Envelope, frozen=True, kw_only=True, gc=False):
    """An envelope with a Point (or no) geometry and finite numbers, validated entirely
    by msgspec while decoding: ingest's fast path, for framing only (its geometry is a
    :class:`PointGeometry`, not a dict). Whatever it decodes, :func:`decode_envelope`
    accepts with the same values; whatever it refuses takes that slower path."""

    geometry: PointGeometry | None = None  # type: ignore[assignment]
    attributes: dict[str, Finite | int | str | bool | None] = {}


_point_decoder = msgspec.json.Decoder(PointEnvelope)


def split_for_frames(records: Sequence[Record], *,
                     max_ahead: float = 86400.0,
                     floor: datetime = datetime(1970, 1, 1, tzinfo=UTC),
                     now: datetime | None = None,
                     ) -> tuple[list[Pair], list[DeadLetter]]:
    """:func:`split_records`' split, in the records' order, for framing: envelopes
    msgspec validates alone (a Point or no geometry, finite numbers) come as
    :class:`PointEnvelope`; the others, and every record refused, take
    :func:`split_records` (same envelopes, same dead letters). A third of the cost."""
    now = now or datetime.now(UTC)
    decode = _point_decoder.decode
    good: list[Pair] = []
    bad: list[tuple[int, DeadLetter]] = []  # (record position, letter)
    where: list[int] = []  # each good pair's record position
    for position, rec in enumerate(records):
        try:
            good.append((decode(rec.value), rec))  # type: ignore[arg-type]
            where.append(position)
        except Exception:  # not for the fast path: the exact one says what it is
            pairs, letters = split_records([rec], max_ahead=max_ahead, floor=floor, now=now)
            good.extend(pairs)
            where.extend(position for _ in pairs)
            bad.extend((position, letter) for letter in letters)
    if good:
        seconds = epoch_seconds([envelope.time for envelope, _ in good])
        latest = (now + timedelta(seconds=max_ahead)).timestamp()
        doubtful = np.flatnonzero((seconds > latest - 0.01)
                                  | (seconds < floor.timestamp() + 0.01)).tolist()
        refused = set()
        for i in doubtful:  # compared exactly, as datetimes
            envelope, rec = good[i]
            problem = _time_problem(envelope, now, max_ahead, floor)
            if problem is not None:
                refused.add(i)
                bad.append((where[i], DeadLetter.from_error(
                    problem, stage="ingest", source=rec.topic, locator=_locator(rec),
                    raw=_text(rec.value or b""))))
        if refused:
            good = [pair for i, pair in enumerate(good) if i not in refused]
    bad.sort(key=lambda item: item[0])
    return good, [letter for _, letter in bad]


def _locator(rec: Record) -> str:
    return f"{rec.topic}/{rec.partition}@{rec.offset}"


def _text(raw: bytes, limit: int = 100_000) -> str:
    """The raw record for a dead letter: decoded leniently, cut at ``limit`` characters."""
    text = raw[:limit * 4].decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + f"…[{len(raw)} bytes]"


def frames_of(pairs: list[Pair]) -> tuple[list[bytes], list[DeadLetter]]:
    """One frame for ``pairs``; an envelope that cannot be framed (it passed validation
    but its geometry breaks the frame's location step) is dead-lettered alone."""
    names: dict[tuple[str, int], str] = {}  # one "topic/partition" string each

    def origin(rec: Record) -> str:
        name = names.get((rec.topic, rec.partition))
        if name is None:
            name = names[(rec.topic, rec.partition)] = f"{rec.topic}/{rec.partition}"
        return name

    def encode(chunk: list[Pair]) -> bytes:
        return encode_batch([env for env, _ in chunk], [origin(rec) for _, rec in chunk],
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
                locator = _locator(rec)
                letters.append(DeadLetter(
                    stage="ingest", source=rec.topic, locator=locator,
                    error=f"cannot frame: {type(exc).__name__}: {exc}",
                    raw=_text(rec.value or b"")))
        return ([encode(kept)] if kept else []), letters


class IngestFailed(Exception):
    """Frames or dead letters the broker did not acknowledge: nothing is committed."""


class IngestLoop:
    """The ``raw.* → events`` loop (blocking; :func:`ingest_process` runs it in its own
    process). ``report`` receives the metrics' increments now and then."""

    def __init__(self, settings: StreamSettings, bootstrap: str,
                 report: Callable[[dict[tuple[str, str], int]], None] | None = None) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = settings.topics
        self.group = ingest_group(settings)
        self.report = report
        self.counts: Counter[tuple[str, str]] = Counter()
        self._failed: list[str] = []
        self._batch: dict[str, int] = {"pending": 0}  # the fetched batch being sent
        self._batches: deque[tuple[dict[str, int], dict[tuple[str, int], int]]] = deque()
        self._producer: Any = None

    def run(self, stop: Callable[[], bool]) -> None:
        """Consume, validate, frame and produce until ``stop()``; raises
        :class:`IngestFailed` when the broker refuses what ingest sends."""
        settings = self.settings
        consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": int(settings.broker_session_timeout * 1000),
            "heartbeat.interval.ms": max(100, int(settings.broker_session_timeout * 1000)
                                         // 6),
            "fetch.wait.max.ms": settings.fetch_max_wait_ms,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            "allow.auto.create.topics": False, "client.id": "citywatch-ingest",
            "logger": log})
        producer = Producer({
            "bootstrap.servers": self.bootstrap, "acks": 1, "linger.ms": 2,
            "message.max.bytes": 16 * 1024 * 1024, "enable.idempotence": False,
            "client.id": "citywatch-ingest", "logger": log})
        self._producer = producer
        try:
            consumer.subscribe(self.topics.raw_all)
            parts = self._partitions(producer)
            reported = time.monotonic()
            while not stop():
                messages = consumer.consume(self.settings.batch_max_events * 8,
                                            timeout=max(1, settings.batch_max_wait_ms) / 1000)
                records = [RawRecord(m.topic(), m.partition(), m.offset(), m.value())
                           for m in messages if readable(m, "raw topics")]
                if records:
                    self._batch = {"pending": 0}
                    self.forward(producer, records, parts)
                    ends: dict[tuple[str, int], int] = {}
                    for r in records:
                        ends[(r.topic, r.partition)] = r.offset + 1
                    self._batches.append((self._batch, ends))
                producer.poll(0)
                self._commit_acknowledged(consumer)
                if self.report is not None and time.monotonic() - reported > 0.5:
                    self.report(dict(self.counts))
                    self.counts.clear()
                    reported = time.monotonic()
            while producer.flush(1.0) and not self._failed:  # what was sent, then commit
                pass
            self._commit_acknowledged(consumer)
        finally:
            producer.flush(10)
            with contextlib.suppress(KafkaException):
                consumer.close()
            if self.report is not None and self.counts:
                self.report(dict(self.counts))

    def _commit_acknowledged(self, consumer: Consumer) -> None:
        """Commit, in order, the offsets of every fetched batch whose frames and dead
        letters are all acknowledged (the next fetch does not wait for them); raise if
        the broker refused any (nothing after it is committed)."""
        if self._failed:
            failed, self._failed = self._failed, []
            raise IngestFailed(f"{len(failed)} messages not acknowledged: {failed[0]}")
        ends: dict[tuple[str, int], int] = {}
        while self._batches and not self._batches[0][0]["pending"]:
            ends.update(self._batches.popleft()[1])
        if ends:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in ends.items()],
                            asynchronous=True)
        if len(self._batches) > 8:  # bound what waits: let acknowledgements catch up
            while self._batches[0][0]["pending"] and not self._failed:
                self._producer.poll(0.1)
            self._commit_acknowledged(consumer)

    def _partitions(self, producer: Producer) -> int:
        """The ``events`` topic's partition count (fixed: the worker checks it)."""
        topic = self.topics.events
        while True:
            found = producer.list_topics(topic, timeout=10).topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return len(found.partitions)
            time.sleep(0.5)

    def _send(self, producer: Producer, topic: str, value: bytes, *, partition: int = -1,
              key: bytes | None = None) -> None:
        batch = self._batch
        batch["pending"] += 1

        def delivered(error: KafkaError | None, message: Any) -> None:
            batch["pending"] -= 1
            if error is not None:
                self._failed.append(f"{message.topic()}: {error}")
        while True:
            try:
                producer.produce(topic, value, key=key, partition=partition,
                                 on_delivery=delivered)
                return
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.05)

    def forward(self, producer: Producer, records: Sequence[Record], partitions: int,
                ) -> None:
        """Send valid envelopes as frames and bad records to dead-letter."""
        good, bad = split_for_frames(records,
                                     max_ahead=self.settings.event_time_max_ahead_seconds,
                                     floor=self.settings.event_time_floor)
        refused = len(bad)
        by_partition: dict[int, list[Pair]] = defaultdict(list)
        if partitions == 1:
            by_partition[0] = good
        else:
            owner: dict[str, int] = {}  # entity -> partition: sensors repeat
            for pair in good:
                entity = pair[0].entity_id
                partition = owner.get(entity)
                if partition is None:
                    partition = owner[entity] = zlib.crc32(entity.encode()) % partitions
                by_partition[partition].append(pair)
        size = self.settings.batch_max_events
        for partition, pairs in by_partition.items():
            for start in range(0, len(pairs), size):
                frames, unframed = frames_of(pairs[start:start + size])
                bad.extend(unframed)
                for frame in frames:
                    self._send(producer, self.topics.events, frame, partition=partition)
        unframed = len(bad) - refused
        self.counts[("records_in", "ingest")] += len(records)
        self.counts[("records_out", "ingest")] += len(good) - unframed  # events
        self.counts[("dead_letters", "ingest")] += len(bad)
        for letter in bad:
            log.warning("dead-letter %s: %s%s", letter.locator,
                        f"field '{letter.field}': " if letter.field else "", letter.error)
            self._send(producer, self.topics.deadletter, encode_deadletter(letter),
                       key=letter.source.encode())


def ingest_main(settings: StreamSettings, bootstrap: str, reports: Any) -> None:
    """Entry point of the ingest process."""
    stopping = stage_setup(settings, "ingest")
    loop = IngestLoop(settings, bootstrap, report=reports.put)
    try:
        loop.run(stop=stopping.is_set)
    except IngestFailed as exc:
        log.critical("ingest cannot go on: %s", exc)
        raise SystemExit(75) from None


def ingest_process(settings: StreamSettings, bootstrap: str,
                   metrics: WorkerMetrics | None = None) -> StageProcess:
    """The ingest stage's process, started and stopped with the worker."""
    return StageProcess("citywatch-ingest", ingest_main, settings, bootstrap,
                        metrics=metrics)
