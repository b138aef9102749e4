"""The store stage: ``alerts`` → the incident store, in a process of its own.

A synchronous librdkafka (confluent-kafka) loop in its own consumer group
(:func:`store_group`) takes up to ``store_batch`` alerts at a time, writes them in one
transaction through an :class:`AlertSink` (idempotent: an alert id already stored is
skipped) and commits their offsets only once they are written: at-least-once, exactly
once in effect. While the store is unreachable the loop waits and retries with backoff,
its partitions paused, so nothing is consumed meanwhile; an alert the store refuses is
dead-lettered alone and the rest of its batch is stored; a message that is not an alert
is dead-lettered.

It used to be a Faust agent in the worker's event loop: each alert then cost ~110 µs of
Faust's per-message work plus the store's own in the rules stage's process, a third of
that process's time at typical alerting.

Example:
    >>> from citywatch.streams.settings import StreamSettings
    >>> class Sink:
    ...     def add_new_alerts(self, alerts): return {a.id for a in alerts}
    >>> loop = StoreLoop(StreamSettings(), "127.0.0.1:9092", Sink())
    >>> loop.group
    'citywatch-store'
    >>> loop.run(stop=lambda: False)                                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import msgspec
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from citywatch.streams.alert import Alert, decode_alert, encode_alert
from citywatch.streams.deadletter import DeadLetter, encode_deadletter
from citywatch.streams.metrics import WorkerMetrics
from citywatch.streams.settings import StreamSettings
from citywatch.streams.stage_process import StageProcess, readable, stage_setup

log = logging.getLogger(__name__)


class SinkUnavailable(Exception):
    """The alert sink (or the rule source in the same store) cannot be reached now (an
    outage): retry, do not drop."""


class AlertSink(Protocol):
    """Where alerts are kept (the incident store): idempotent, batched, durable."""

    def add_new_alerts(self, alerts: Sequence[Alert]) -> Collection[str]:
        """Store ``alerts`` in one transaction; return the ids that were new. Raises
        :class:`SinkUnavailable` when the store is unreachable (the batch is retried);
        any other exception means the store refused the batch (it is split to find the
        alert it refuses, which is dead-lettered alone)."""
        ...


def store_group(settings: StreamSettings) -> str:
    """Consumer group of the store stage."""
    return f"{settings.app_id}-store"


class StoreLoop:
    """The ``alerts → incident store`` loop (blocking; :func:`store_process` runs it in
    its own process). ``report`` receives the metrics' increments now and then."""

    def __init__(self, settings: StreamSettings, bootstrap: str, sink: AlertSink,
                 report: Callable[[dict[tuple[str, str], Any]], None] | None = None,
                 ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.sink = sink
        self.report = report
        self.group = store_group(settings)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.write_seconds: list[float] = []
        self._waiting = False  # an outage: partitions stay paused, even new ones
        self._held: list[Any] = []  # messages a consume returned while waiting
        self._consumer: Any = None
        self._producer: Any = None

    def run(self, stop: Callable[[], bool]) -> None:
        """Consume, store and commit until ``stop()``."""
        settings = self.settings
        session_ms = int(settings.broker_session_timeout * 1000)
        consumer = self._consumer = Consumer({
            "bootstrap.servers": self.bootstrap, "group.id": self.group,
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, session_ms // 6),
            "fetch.wait.max.ms": settings.fetch_max_wait_ms,
            "allow.auto.create.topics": False, "client.id": "citywatch-store",
            "logger": log})
        self._producer = Producer({
            "bootstrap.servers": self.bootstrap, "acks": 1, "linger.ms": 2,
            "message.max.bytes": 16 * 1024 * 1024, "enable.idempotence": False,
            "client.id": "citywatch-store", "logger": log})
        reported = time.monotonic()
        try:
            consumer.subscribe([settings.topics.alerts], on_assign=self._assigned)
            while not stop():
                if self._held:  # before anything newer
                    usable, self._held = self._held, []
                else:
                    usable = [m for m in consumer.consume(
                        settings.store_batch, timeout=settings.store_batch_wait_ms / 1000)
                        if readable(m, "alerts")]
                if usable:
                    self.store(usable, stop)
                if time.monotonic() - reported > 0.5:
                    self._report()
                    reported = time.monotonic()
        finally:
            self._producer.flush(10)
            with contextlib.suppress(KafkaException):
                consumer.close()
            self._report()

    def store(self, messages: Sequence[Any], stop: Callable[[], bool]) -> None:
        """Write the alerts among ``messages`` (others are dead-lettered), then commit
        the messages' offsets; an outage is waited out unless ``stop()`` (then nothing
        is committed: the next owner reads them again)."""
        self.counts[("records_in", "store")] += len(messages)
        alerts: list[Alert] = []
        for message in messages:
            try:
                alerts.append(decode_alert(message.value()))
            except msgspec.MsgspecError as exc:
                self._dead_letter(self.settings.topics.alerts, _locator(message),
                                  f"not an alert: {exc}", message.value() or b"")
        new = self._write(alerts, stop)
        if new is None:
            return
        self.counts[("records_out", "store")] += len(new)
        if self._producer.flush(30):
            raise KafkaException("dead letters not acknowledged within 30 s")
        ends: dict[tuple[str, int], int] = {}
        for message in messages:
            ends[(message.topic(), message.partition())] = message.offset() + 1
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o)
                                           for (t, p), o in ends.items()], asynchronous=False)
        except KafkaException as exc:  # revoked meanwhile: the new owner writes them again
            log.warning("alert offsets not committed (%s); their new owner stores them "
                        "again, which adds nothing", exc)

    def _write(self, alerts: list[Alert], stop: Callable[[], bool]) -> set[str] | None:
        """Write ``alerts``; the new ids, or None when stopped during an outage."""
        if not alerts:
            return set()
        settings = self.settings
        delay = 0.5
        while True:
            started = time.perf_counter()
            try:
                new = set(self.sink.add_new_alerts(alerts))
                self.write_seconds.append(time.perf_counter() - started)
                self._resume()
                return new
            except SinkUnavailable as exc:
                log.warning("incident store unavailable (%s); %d alerts wait, retrying in "
                            "%.1f s (not consuming meanwhile)", exc, len(alerts), delay)
                self._pause()
                deadline = time.monotonic() + delay
                while time.monotonic() < deadline:  # serve the group, consume nothing
                    if stop():
                        return None
                    self._held.extend(m for m in self._consumer.consume(
                        settings.store_batch, timeout=min(0.2, delay)) if readable(m, "alerts"))
                delay = min(delay * 2, 30.0)
            except Exception as exc:
                if len(alerts) == 1:
                    alert = alerts[0]
                    log.warning("incident store refused alert %s: %s", alert.id, exc)
                    self._dead_letter(self.settings.topics.alerts, alert.id,
                                      f"refused by the store: {exc}", encode_alert(alert))
                    return set()
                half = len(alerts) // 2
                first = self._write(alerts[:half], stop)
                second = None if first is None else self._write(alerts[half:], stop)
                return None if second is None or first is None else first | second

    def _pause(self) -> None:
        if not self._waiting:
            self._waiting = True
            self._consumer.pause(self._consumer.assignment())

    def _resume(self) -> None:
        if self._waiting:
            self._waiting = False
            self._consumer.resume(self._consumer.assignment())

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions assigned during an outage stay paused until the store is back."""
        if self._waiting:
            consumer.assign(partitions)
            consumer.pause(partitions)

    def _dead_letter(self, source: str, locator: str, error: str, raw: bytes) -> None:
        self.counts[("dead_letters", "store")] += 1
        letter = DeadLetter(stage="store", source=source, locator=locator,
                            error=error[:2000],
                            raw=raw[:1_000_000].decode("utf-8", "replace"))
        while True:
            try:
                self._producer.produce(self.settings.topics.deadletter,
                                       encode_deadletter(letter))
                return
            except BufferError:
                self._producer.poll(0.05)

    def _report(self) -> None:
        if self.report is None or not (self.counts or self.write_seconds):
            return
        counts: dict[tuple[str, str], Any] = dict(self.counts)
        if self.write_seconds:
            counts[("store_write", "store")] = self.write_seconds
        self.report(counts)
        self.counts = Counter()
        self.write_seconds = []


def _locator(message: Any) -> str:
    return f"{message.topic()}/{message.partition()}@{message.offset()}"


SinkFactory = Callable[[], AlertSink]
"""Builds the sink in the store process (it must pickle: a module-level function or a
``functools.partial`` of one)."""


def store_main(settings: StreamSettings, bootstrap: str, reports: Any,
               open_sink: SinkFactory) -> None:
    """Entry point of the store process."""
    stopping = stage_setup(settings, "store")
    StoreLoop(settings, bootstrap, open_sink(), report=reports.put).run(
        stop=stopping.is_set)


def store_process(settings: StreamSettings, bootstrap: str, open_sink: SinkFactory,
                  metrics: WorkerMetrics | None = None) -> StageProcess:
    """The store stage's process, started and stopped with the worker. It is given 60 s
    to finish the batch it is writing when the worker stops."""
    return StageProcess("citywatch-store", store_main, settings, bootstrap, open_sink,
                        metrics=metrics, stop_timeout=60.0)
