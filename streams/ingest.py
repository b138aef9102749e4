"""Ingest: validate raw one-per-message envelopes and frame them into micro-batches.

Faust costs ~110 µs per Kafka message, so this stage is not a Faust agent: it runs in
**its own process** (:class:`IngestProcess`, started by the worker), a synchronous
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

import asyncio
import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import zlib
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
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
    latest = now + timedelta(seconds=max_ahead)
    for rec in records:
        raw = rec.value or b""
        try:
            envelope = decode_envelope(raw)
            if envelope.time > latest:
                raise EnvelopeError(f"{envelope.time.isoformat()} is more than "
                                    f"{max_ahead:g} s ahead of the time received "
                                    f"({now.isoformat()})", field="time")
            if envelope.time < floor:
                raise EnvelopeError(f"{envelope.time.isoformat()} is before the floor "
                                    f"{floor.isoformat()}", field="time")
            good.append((envelope, rec))
        except EnvelopeError as exc:  # the locator is written only for the bad records
            bad.append(DeadLetter.from_error(exc, stage="ingest", source=rec.topic,
                                             locator=_locator(rec), raw=_text(raw)))
        except Exception as exc:  # any bytes: a dead letter, never a crash
            bad.append(DeadLetter(stage="ingest", source=rec.topic, locator=_locator(rec),
                                  error=f"unreadable record: {type(exc).__name__}: {exc}",
                                  raw=_text(raw)))
    return good, bad


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
    """The ``raw.* → events`` loop (blocking; :class:`IngestProcess` runs it in its own
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
                           for m in messages if self._usable(m)]
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

    @staticmethod
    def _usable(message: Any) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("raw topics not read: %s", error)
        return False

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
        good, bad = split_records(records,
                                  max_ahead=self.settings.event_time_max_ahead_seconds,
                                  floor=self.settings.event_time_floor)
        refused = len(bad)
        by_partition: dict[int, list[Pair]] = defaultdict(list)
        for pair in good:
            by_partition[zlib.crc32(pair[0].entity_id.encode()) % partitions].append(pair)
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


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the worker that started it dies (a killed
    worker must not leave its ingest running)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def ingest_main(settings: StreamSettings, bootstrap: str, reports: Any) -> None:
    """Entry point of the ingest process."""
    _die_with_parent()
    logging.basicConfig(level=settings.log_level.upper().replace("WARN", "WARNING"),
                        format="[%(asctime)s] [ingest %(process)d] %(levelname)s %(message)s")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    gc.freeze()  # see Pipeline.run: decoding allocates many short-lived objects
    gc.set_threshold(50_000, 20, 20)
    loop = IngestLoop(settings, bootstrap, report=reports.put)
    try:
        loop.run(stop=stopping.is_set)
    except IngestFailed as exc:
        log.critical("ingest cannot go on: %s", exc)
        raise SystemExit(75) from None


class IngestProcess(Service):
    """The ingest stage's process, started and stopped with the worker (a mode service
    beside the Faust app); its metrics are relayed into the worker's. The worker exits
    with status 75 for its supervisor if ingest dies."""

    def __init__(self, settings: StreamSettings, bootstrap: str,
                 metrics: WorkerMetrics | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.settings = settings
        self.bootstrap = bootstrap
        self.metrics = metrics or WorkerMetrics()
        self._context = multiprocessing.get_context("spawn")
        self._reports: Any = self._context.Queue()
        self.process: Any = None

    async def on_start(self) -> None:
        self.process = self._context.Process(
            target=ingest_main, args=(self.settings, self.bootstrap, self._reports),
            name="citywatch-ingest", daemon=True)
        self.process.start()
        threading.Thread(target=self._relay, name="ingest-metrics", daemon=True).start()

    async def on_stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.is_alive():
            process.terminate()  # SIGTERM: it finishes its batch and commits
            await self._join(process, 20.0)
            if process.is_alive():
                process.kill()

    @staticmethod
    async def _join(process: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    @Service.task
    async def _watch(self) -> None:
        """Exit the worker (status 75) if the ingest process dies on its own."""
        while not self.should_stop:
            await asyncio.sleep(1.0)
            process = self.process
            if process is not None and not process.is_alive() and not self.should_stop:
                log.critical("the ingest process exited with status %s; exiting with "
                             "status 75 for the supervisor to restart the worker",
                             process.exitcode)
                logging.shutdown()
                os._exit(75)

    def _relay(self) -> None:
        """Metrics the ingest process reports, into this worker's counters."""
        while True:
            try:
                counts = self._reports.get(timeout=1.0)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            for (name, stage), value in counts.items():
                if name == "dead_letters":
                    self.metrics.dead_letters.labels(stage=stage).inc(value)
                else:
                    direction = name.removeprefix("records_")
                    self.metrics.records.labels(stage=stage, direction=direction).inc(value)
