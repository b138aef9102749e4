"""The Faust worker: ingest → evaluate (micro-batches) → alerts → alert sink.

Ingest (``raw.* → events``) and the store stage (``alerts →`` the incident store) run
in processes of their own beside the Faust app, which evaluates the rules.

The worker owns the small interfaces it needs from the layers above and below it — an
:class:`Evaluator` (the rule engine), a :class:`RuleSource` that builds one and notices
newer rule sets, a :class:`ModelSource` that refreshes forecast models, an
:class:`~citywatch.streams.store_stage.AlertSink` (the incident store, built in the store
process by a picklable factory) and a delivery queue (the outbox) — and the composition
root (``citywatch.ops.worker.build_pipeline``) plugs the real ones in.

Example:
    >>> from citywatch.ops.settings import Settings
    >>> from citywatch.ops.worker import build_pipeline
    >>> pipeline = build_pipeline(Settings(kafka_bootstrap="127.0.0.1:9092"))  # doctest: +SKIP
    >>> pipeline.run()   # blocks until SIGTERM / SIGINT                         # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Collection
from typing import Any, NoReturn, Protocol

import faust
import msgspec
import numpy as np
from kafka import TopicPartition

from citywatch.streams.alert import Alert, encode_alert
from citywatch.streams.batch import ColumnFrame, decode_frame, encode_frame, take_rows
from citywatch.streams.broker_watch import EXIT_BROKER_LOST, BrokerWatch
from citywatch.streams.deadletter import DeadLetter, encode_deadletter
from citywatch.streams.envelope import Envelope, encode_envelope
from citywatch.streams.ingest import ingest_process
from citywatch.streams.kafka_admin import KafkaAdmin, ensure_topics
from citywatch.streams.lag import stage_lags
from citywatch.streams.metrics import WorkerMetrics
from citywatch.streams.routing import Deliverer, Delivery, DeliveryQueue
from citywatch.streams.rule_state import ChangelogState, encode_writes
from citywatch.streams.settings import StreamSettings
from citywatch.streams.store_stage import SinkFactory, SinkUnavailable, store_process
from citywatch.streams.webhook_policy import WebhookPolicy

log = logging.getLogger(__name__)


class FrameResult(Protocol):
    """What evaluating one frame produced."""

    alerts: list[Alert]
    late: list[tuple[Envelope, str, str]]  # event, rule id, why it is late
    state: Any  # the frame's pending state changes (``.pending``), or None
    routes: dict[int, list[int]]  # rows zone-keyed rules read, per owning partition

    def commit_state(self) -> None: ...


class Evaluator(Protocol):
    """Evaluates frames (the rule engine); ``version`` names what it evaluates."""

    @property
    def version(self) -> str: ...

    @property
    def has_rules(self) -> bool: ...

    def process(self, frame: ColumnFrame, position: int, *, shard: int = -1,
                stream_time: tuple[float, float] | None = None) -> FrameResult: ...

    def state_recovered(self) -> None:
        """The state gained a recovered partition: rebuild what is derived from it."""
        ...

    def split(self, zone_state: Any, partitions: int) -> tuple[Evaluator, Evaluator]:
        """The entity stage (this evaluator's state) and the zone stage (``zone_state``)
        of the same rule set, over ``partitions`` partitions."""
        ...


class RuleSource(Protocol):
    """Builds evaluators over ``state`` (blocking calls; the worker runs them in a thread)."""

    def load(self, state: ChangelogState) -> Evaluator:
        """The evaluator of the rule set in force (raises if none can load)."""
        ...

    def newer(self, current: str, state: ChangelogState) -> Evaluator | None:
        """An evaluator of a rule set newer than version ``current``, or None."""
        ...


class ModelSource(Protocol):
    """Forecast models the evaluators read; ``refresh`` swaps in retrained ones."""

    def refresh(self) -> list[str]:
        """Swap in newer models; returns a description of each swap."""
        ...

    def versions(self) -> dict[str, str]:
        """The model version in use per series."""
        ...


TRUNCATED = "…[truncated]"


def fit_alert(alert: Alert, limit: int) -> bytes:
    """The alert's message, at most ``limit`` bytes: an alert too large for the broker
    loses its free text first (message and text attributes cut, marked with
    ``…[truncated]``), then its geometry (its zone and lineage stay), never its
    neighbours.

    Example:
        >>> from datetime import datetime, timezone
        >>> t = datetime(2024, 1, 1, tzinfo=timezone.utc)
        >>> big = Alert(id="a", rule_id="r", rule_version="v", domain="disaster",
        ...             kind="k", severity="Minor", urgency="Past", certainty="Observed",
        ...             category="Geo", event="e", message="x" * 50_000, entity_id="e",
        ...             event_time=t, raised_at=t, source_event_ids=["s"])
        >>> len(fit_alert(big, 10_000)) <= 10_000
        True
        >>> from citywatch.streams.alert import decode_alert
        >>> decode_alert(fit_alert(big, 10_000)).message.endswith(TRUNCATED)
        True
    """
    payload = encode_alert(alert)
    if len(payload) <= limit:
        return payload
    budget = max(100, limit // 4)
    def cut(text: str) -> str:
        return text if len(text) <= budget else text[:budget] + TRUNCATED
    smaller = msgspec.structs.replace(
        alert, message=cut(alert.message), event=cut(alert.event),
        attributes={k: cut(v) if isinstance(v, str) else v
                    for k, v in alert.attributes.items()},
        source_event_ids=alert.source_event_ids[:1000])
    payload = encode_alert(smaller)
    if len(payload) > limit:
        payload = encode_alert(msgspec.structs.replace(
            smaller, geometry=None, attributes={"truncated": True},
            source_event_ids=alert.source_event_ids[:100]))
    return payload


def faust_broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def set_fetch_max_wait(ms: int) -> None:
    """Faust creates its aiokafka consumer with ``fetch_max_wait_ms=1500`` and no setting
    to change it. A broker that answers a fetch only when that wait expires (the
    embedded one does, when the fetch finds nothing new) then stalls the agents for up
    to 1.5 s whenever they catch up; this makes the wait ``ms``. Applied by
    :func:`make_faust_app` before the consumer is created."""
    from faust.transport.drivers import aiokafka as driver

    create = driver.AIOKafkaConsumerThread._create_worker_consumer
    original = getattr(create, "__wrapped__", create)

    def create_with_wait(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = ms
        return consumer

    create_with_wait.__wrapped__ = original  # type: ignore[attr-defined]
    driver.AIOKafkaConsumerThread._create_worker_consumer = create_with_wait


def make_faust_app(settings: StreamSettings, bootstrap: str) -> faust.App:
    """A Faust app tuned for fast group joins (the embedded broker waits about half the
    session timeout on a first join), short fetch waits and frequent commits. It never
    declares topics: citywatch creates them with the configured partition counts."""
    set_fetch_max_wait(settings.fetch_max_wait_ms)
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)  # Faust makes one level
    session = settings.broker_session_timeout
    return faust.App(
        settings.app_id, broker=faust_broker_urls(bootstrap), store="memory://",
        datadir=str(settings.data_dir / "worker"), web_enabled=False, autodiscover=False,
        topic_partitions=settings.topic_partitions, topic_allow_declare=False,
        broker_session_timeout=session, broker_rebalance_timeout=session,
        broker_heartbeat_interval=max(0.1, session / 6),
        broker_commit_interval=settings.commit_interval,
        consumer_auto_offset_reset="earliest", producer_acks=1, producer_linger_ms=2)


def make_faust_worker(app: faust.App, *services: Any, log_level: str) -> faust.Worker:
    """A Faust worker running ``app`` and ``services`` that logs at ``log_level``.

    Faust's terminal spinner sets the root logger to DEBUG (so that it spins on every
    record) whatever the level asked for; every debug call of Faust and aiokafka then
    built a record for nothing, a twentieth of a worker's time. It is left out.
    """
    worker = faust.Worker(app, *services, loglevel=log_level, quiet=True)
    worker.spinner = None
    return worker


class Pipeline:
    """Everything one worker process runs, wired by the composition root."""

    def __init__(self, settings: StreamSettings, bootstrap: str, *, rules: RuleSource,
                 models: ModelSource, alerts: SinkFactory, deliveries: DeliveryQueue,
                 ready_note: str = "", metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.ready_note = ready_note
        self._ready_said = False
        self.bootstrap = bootstrap
        self.rules = rules
        self.models = models
        self.app = make_faust_app(settings, self.bootstrap)
        self.rule_state = ChangelogState()
        self.zone_state = ChangelogState()
        self.models.refresh()
        self._use(rules.load(self.rule_state))
        self.metrics.set_models(models.versions())
        self.deliverer = Deliverer(deliveries, self._send_team, self._dead_letter_delivery,
                                   timeout=settings.webhook_timeout_seconds,
                                   max_attempts=settings.webhook_max_attempts,
                                   backoff=settings.webhook_backoff_seconds,
                                   policy=WebhookPolicy(settings.webhook_allow))
        self.ingest = ingest_process(settings, self.bootstrap, self.metrics)
        self.store = store_process(settings, self.bootstrap, alerts, self.metrics)
        topics = settings.topics
        self.events_topic = self.app.topic(topics.events, value_serializer="raw",
                                           key_serializer="raw")
        self.deadletter_topic = self.app.topic(topics.deadletter, value_serializer="raw",
                                               key_serializer="raw")
        self.state_topic = self.app.topic(topics.rule_state, value_serializer="raw",
                                          key_serializer="raw")
        self.keyed_topic = self.app.topic(topics.events_keyed, value_serializer="raw",
                                          key_serializer="raw")
        self.keyed_state_topic = self.app.topic(topics.rule_state_keyed,
                                                value_serializer="raw", key_serializer="raw")
        self._stream_times: dict[int, float] = {}  # events partition -> newest event time
        self._heard: dict[tuple[int, int], float] = {}  # (zone partition, source) -> when
        self._zone_started: dict[int, float] = {}
        self.app.agent(self.events_topic, name="evaluate")(self.evaluate)
        self.app.agent(self.keyed_topic, name="evaluate_zones")(self.evaluate_zones)
        self._team_topics: dict[str, faust.TopicT] = {}
        self.app.timer(interval=settings.rules_poll_seconds, name="reload_rules")(
            self.reload_rules)
        self.app.timer(interval=settings.forecast_poll_seconds, name="reload_forecasts")(
            self.reload_forecasts)
        self.broker_watch = BrokerWatch(settings, bootstrap)
        self.app.timer(interval=settings.broker_check_seconds, name="watch_broker")(
            self.watch_broker)
        self.app.timer(interval=settings.delivery_poll_seconds, name="deliver")(self.deliver)

        self.app.on_before_shutdown.connect(self._close_deliveries)
        self.app.on_partitions_assigned.connect(self._say_ready)
        self.app.on_partitions_revoked.connect(self._forget_revoked)

    def _use(self, engine: Evaluator) -> None:
        """Run ``engine``'s rule set: its entity stage here, its zone stage over
        ``events.keyed``."""
        self.engine = engine
        self.entity_engine, self.zone_engine = engine.split(
            self.zone_state, self.settings.topic_partitions)
        self.metrics.set_ruleset(engine.version)

    async def _forget_revoked(self, app: faust.App, revoked: Collection[Any],
                              **kwargs: object) -> None:
        """A partition given to another worker: its state is recovered again from the
        changelog (which that worker extends) if it comes back."""
        topics = self.settings.topics
        for tp in revoked:
            if tp.topic == topics.events:
                self.rule_state.forget(tp.partition)
                self._stream_times.pop(tp.partition, None)
            elif tp.topic == topics.events_keyed:
                self.zone_state.forget(tp.partition)
                self._zone_started.pop(tp.partition, None)
                for heard in [k for k in self._heard if k[0] == tp.partition]:
                    del self._heard[heard]  # every source gets its grace again

    async def _say_ready(self, app: faust.App, *args: object, **kwargs: object) -> None:
        """One line on stdout once the worker has its partitions: what it consumes, the
        rule-set version and (from the composition root) its store."""
        if self._ready_said:
            return
        self._ready_said = True
        topics = self.settings.topics
        out = sys.__stdout__ or sys.stdout  # Faust turns sys.stdout into warnings
        out.write(f"ready: consuming {topics.raw('*')}, {topics.events}, "
                  f"{topics.events_keyed}, {topics.alerts}; "
                  f"rules version {self.engine.version}{self.ready_note}\n")
        out.flush()

    async def _close_deliveries(self, app: faust.App, **kwargs: object) -> None:
        await self.deliverer.close()

    async def deliver(self) -> None:
        """Send what the outbox owes teams (topics, webhooks); an outage waits."""
        try:
            while await self.deliverer.run_once() == self.deliverer.batch:
                pass
        except Exception as exc:  # the store or broker away: the outbox keeps it
            log.warning("deliveries wait: %s: %s", type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "")

    async def _send_team(self, team: str, key: bytes, payload: bytes) -> None:
        topic = await self._team_topic(team)
        await (await topic.send(key=key, value=payload))

    async def _dead_letter_delivery(self, delivery: Delivery, reason: str) -> None:
        await self._dead_letter("webhook", f"subscription:{delivery.subscription_id}",
                                f"{delivery.subscription_id}:{delivery.alert_id}", reason,
                                delivery.payload)

    async def _team_topic(self, team: str) -> faust.TopicT:
        topic = self._team_topics.get(team)
        if topic is None:
            name = self.settings.topics.team(team)
            await asyncio.to_thread(ensure_topics, self.bootstrap, [name],
                                    self.settings.topic_partitions)
            topic = self.app.topic(name, value_serializer="raw", key_serializer="raw")
            self._team_topics[team] = topic
        return topic

    async def reload_rules(self) -> None:
        """Swap in a newly applied rule set (validated when applied) without a restart."""
        current = self.engine.version
        try:
            engine = await asyncio.to_thread(self.rules.newer, current, self.rule_state)
        except SinkUnavailable as exc:
            log.warning("rule sets not checked: store unavailable (%s); keeping %s", exc,
                        current)
            return
        except Exception:  # a rule set that cannot load here must not stop the worker
            log.exception("a newer rule set could not be loaded; keeping %s", current)
            return
        if engine is not None:
            log.warning("rules reloaded: %s -> %s", current, engine.version)
            self._use(engine)

    async def watch_broker(self) -> None:
        """Exit (status 75) when the broker cannot serve this worker any more, rather
        than hang while looking healthy; outages shorter than the limit are waited out."""
        problem = await asyncio.to_thread(self.broker_watch.check)
        if problem is not None:
            self._exit_broker_lost(problem)

    def measure_lag(self) -> None:
        """Each stage's consumer lag, for the metrics, every broker check interval from
        the start (a thread: the backlog a worker starts with is measured too)."""
        while True:
            try:
                with KafkaAdmin(self.bootstrap, timeout_ms=5000) as admin:
                    while True:
                        self.metrics.set_lags(stage_lags(admin, self.settings))
                        time.sleep(self.settings.broker_check_seconds)
            except Exception as exc:  # the broker away: the watch handles it
                log.info("lag not measured: %s", exc)
                time.sleep(self.settings.broker_check_seconds)

    def _exit_broker_lost(self, problem: str) -> NoReturn:
        log.critical("worker cannot go on: %s; exiting with status %d for the supervisor "
                     "to restart it (it recreates the topics)", problem, EXIT_BROKER_LOST)
        logging.shutdown()
        # nothing can be committed to a broker that is gone: exit like a killed worker,
        # which loses and doubles nothing (alerts and state are idempotent by id/offset)
        os._exit(EXIT_BROKER_LOST)

    async def reload_forecasts(self) -> None:
        """Swap in forecast grids of models retrained since (hot swap, no restart)."""
        try:
            swapped = await asyncio.to_thread(self.models.refresh)
        except Exception as exc:  # an unreachable registry must not stop the worker
            log.warning("forecast models not refreshed (%s); keeping the current ones", exc)
            return
        if swapped:
            log.warning("forecast models swapped: %s", ", ".join(swapped))
            self.metrics.set_models(self.models.versions())

    async def evaluate(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """events (micro-batches) → rules → one alert per message on ``alerts``, and the
        rows zone-keyed rules read → ``events.keyed``, by the partition owning their zone.

        Stateful rules' changes reach the state table only after the frame's alerts
        (and routed rows) are acknowledged, stamped with the frame's offset: a worker
        killed anywhere in between re-reads the frame and raises the same alerts (same
        ids) without applying the frame to its state twice.
        """
        async for event in stream.events():
            partition, offset = event.message.partition, event.message.offset
            await self._ensure_recovered(self.rule_state, self.settings.topics.rule_state,
                                         self.settings.topics.events, partition)
            engine = self.entity_engine
            where = f"{event.message.topic}/{partition}@{offset}"
            started = time.perf_counter()
            try:
                frame = decode_frame(event.value)
                self.metrics.records.labels(stage="rules", direction="in").inc(frame.size)
                result = engine.process(frame, position=offset)
            except Exception as exc:  # one frame must never stop the stage for good
                await self._frame_failed("rules", where, exc, bytes(event.value))
                yield None
                continue
            self.metrics.rule_evaluation.observe(time.perf_counter() - started)
            sent = await self._send_results(result, "rules")
            if frame.size:
                newest = float(np.frombuffer(frame.times, np.float64).max())
                self._stream_times[partition] = max(
                    newest, self._stream_times.get(partition, -math.inf))
            if self.zone_engine.has_rules and partition in self._stream_times:
                sent.extend(await self._route(frame, result.routes, partition, offset))
            await self._commit_state(result, sent, self.rule_state, self.state_topic,
                                     partition)
            yield None

    async def _route(self, frame: ColumnFrame, routes: dict[int, list[int]],
                     partition: int, offset: int) -> list[Any]:
        """One ``events.keyed`` frame per partition: the rows it owns (maybe none) and
        this partition's stream time, which lets zone windows close."""
        origin = f"{self.settings.topics.events}/{partition}"
        stream_time = self._stream_times[partition]
        return [await self.keyed_topic.send(
            value=encode_frame(take_rows(frame, routes.get(target, []), origin=origin,
                                         offset=offset, source_partition=partition,
                                         watermark=stream_time)),
            partition=target) for target in range(self.settings.topic_partitions)]

    async def evaluate_zones(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """events.keyed → zone windows and correlations of the zones each partition owns,
        held back to the time every events partition has reached."""
        async for event in stream.events():
            partition, offset = event.message.partition, event.message.offset
            await self._ensure_recovered(self.zone_state,
                                         self.settings.topics.rule_state_keyed,
                                         self.settings.topics.events_keyed, partition)
            where = f"{event.message.topic}/{partition}@{offset}"
            try:
                frame = decode_frame(event.value)
                reported = self._reported(partition, frame)
                result = self.zone_engine.process(
                    frame, position=offset, shard=partition,
                    stream_time=(self._zone_time(partition, None),
                                 self._zone_time(partition, reported)))
            except Exception as exc:  # one frame must never stop the stage for good
                await self._frame_failed("zone_rules", where, exc, bytes(event.value))
                yield None
                continue
            sent = await self._send_results(result, "zone_rules")
            if reported:
                self.zone_state.set(*reported)  # with the frame's state, or alone
            await self._commit_state(result, sent, self.zone_state, self.keyed_state_topic,
                                     partition)
            yield None

    def _reported(self, partition: int, frame: ColumnFrame) -> tuple[str, float] | None:
        """The source partition's stream time this frame carries, as a state write (None
        when it adds nothing)."""
        source = frame.source_partition
        if source < 0 or math.isnan(frame.watermark):
            return None
        self._heard[(partition, source)] = time.monotonic()
        key = f"~upstream|{partition}|{source}"
        known = self.zone_state.get(key)
        if known is not None and known >= frame.watermark:
            return None
        return key, frame.watermark

    def _zone_time(self, partition: int, reported: tuple[str, float] | None) -> float:
        """The time every events partition feeding zone partition ``partition`` has
        reached (with the ``reported`` write, if given); a partition silent for
        ``idle_partition_seconds`` does not hold it back."""
        now = time.monotonic()
        started = self._zone_started.setdefault(partition, now)
        idle = self.settings.idle_partition_seconds
        times = []
        for source in range(self.settings.topic_partitions):
            key = f"~upstream|{partition}|{source}"
            if now - self._heard.get((partition, source), started) > idle:
                continue
            known = reported[1] if reported and reported[0] == key \
                else self.zone_state.get(key)
            times.append(-math.inf if known is None else known)
        return min(times) if times else math.inf

    async def _frame_failed(self, stage: str, where: str, exc: Exception,
                            raw: bytes) -> None:
        log.exception("%s failed on frame %s; dead-lettered", stage, where)
        await self._dead_letter(stage, where.split("/")[0], where,
                                f"rule evaluation failed: {type(exc).__name__}: {exc}", raw)

    async def _send_results(self, result: FrameResult, stage: str) -> list[Any]:
        """Send a frame's alerts and late events; returns the alerts' pending sends."""
        self.metrics.records.labels(stage=stage, direction="out").inc(len(result.alerts))
        self.metrics.dead_letters.labels(stage=stage).inc(len(result.late))
        # straight to the app's producer (the one Faust flushes before it commits
        # offsets): Faust's Topic.send machinery cost more than the rules per alert
        producer, topic = self.app.producer, self.settings.topics.alerts
        limit = self.settings.max_alert_bytes
        sent = [await producer.send(topic, alert.id.encode(), fit_alert(alert, limit),
                                    None, None, None)
                for alert in result.alerts]
        for envelope, rule_id, reason in result.late:
            letter = DeadLetter(stage=stage, source=self.settings.topics.events,
                                locator=f"{rule_id}:{envelope.id}",
                                error=f"late for rule {rule_id}: {reason}",
                                raw=encode_envelope(envelope).decode())
            await self.deadletter_topic.send(value=encode_deadletter(letter))
        return sent

    async def _commit_state(self, result: FrameResult, sent: list[Any],
                            state: ChangelogState, changelog: faust.TopicT,
                            partition: int) -> None:
        """Once what the frame sent is acknowledged, its state changes become one
        changelog message on the frame's partition."""
        if result.state is not None and result.state.pending:
            await asyncio.gather(*sent)
            result.commit_state()
        writes = state.take_writes()
        if writes:
            await asyncio.gather(*sent)
            await changelog.send(value=encode_writes(writes), partition=partition)

    async def _ensure_recovered(self, state: ChangelogState, changelog: str, log_topic: str,
                                partition: int) -> None:
        """Select ``partition``'s state, recovering it from its changelog first if this
        worker does not hold it yet."""
        if partition in state.recovered:
            state.use(partition)
            return
        try:
            await asyncio.to_thread(self._recover_state, state, changelog, log_topic,
                                    partition)
        except Exception as exc:  # a changelog the broker cannot serve
            self._exit_broker_lost(f"the changelog {changelog} of partition {partition} "
                                   f"cannot be read: {exc}")
        state.use(partition)
        # here, in the event loop, between frames: the other stage may be evaluating
        # while the changelog is read in a thread, and must not see its indexes reset
        (self.zone_engine if state is self.zone_state else self.entity_engine
         ).state_recovered()

    def _recover_state(self, state: ChangelogState, changelog: str, log_topic: str,
                       partition: int) -> None:
        """Replay the partition's state changelog (in a thread)."""
        with KafkaAdmin(self.bootstrap) as admin:
            admin.ensure_topics([changelog], self.settings.topic_partitions)
            messages = admin.read_partition(changelog, partition)
            log_end = admin.end_offsets([log_topic]).get(TopicPartition(log_topic, partition),
                                                         0)
        applied = state.recover(partition, (value for _, value in messages), log_end=log_end)
        if applied:
            log.warning("%s of partition %d recovered from %d changelog messages", changelog,
                        partition, applied)

    async def _dead_letter(self, stage: str, source: str, locator: str, error: str,
                           raw: bytes) -> None:
        self.metrics.dead_letters.labels(stage=stage).inc()
        letter = DeadLetter(stage=stage, source=source, locator=locator, error=error[:2000],
                            raw=raw[:1_000_000].decode("utf-8", "replace"))
        await self.deadletter_topic.send(value=encode_deadletter(letter))

    def run(self) -> None:
        """Run the worker until it receives SIGTERM or SIGINT."""
        # zones, rules and libraries are loaded: keep them out of every GC pass; and collect
        # the young generation less often: decoding a frame allocates thousands of short-
        # lived dicts, and the default threshold (700) spent half of ingest's decode time
        # in collections
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        if self.settings.metrics_port is not None:
            self.metrics.serve(self.settings.metrics_port)
            threading.Thread(target=self.measure_lag, name="measure-lag", daemon=True).start()
        make_faust_worker(self.app, self.ingest, self.store,
                          log_level=self.settings.log_level
                          ).execute_from_commandline()
