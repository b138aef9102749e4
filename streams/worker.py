"""The Faust worker: ingest → rules (micro-batches) → alerts → incident store.

Example:
    >>> from citywatch.ops.settings import Settings
    >>> pipeline = Pipeline(Settings(kafka_bootstrap="127.0.0.1:9092"))  # doctest: +SKIP
    >>> pipeline.run()   # blocks until SIGTERM / SIGINT                     # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import faust
import msgspec

from citywatch.forecasts.grid import ForecastBook
from citywatch.forecasts.registry import ModelRegistry
from citywatch.ops.kafka_admin import KafkaAdmin
from citywatch.ops.settings import Settings
from citywatch.ops.store.rulesets import RuleSetBook
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.subscriptions import SubscriptionBook
from citywatch.rules.alert import Alert, decode_alert, encode_alert
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import load_ruleset
from citywatch.rules.model import Correlate, RuleSet, Window
from citywatch.streams.batch import decode_frame
from citywatch.streams.deadletter import DeadLetter, encode_deadletter
from citywatch.streams.envelope import encode_envelope
from citywatch.streams.ingest import RawIngest
from citywatch.streams.routing import SubscriptionCache, WebhookDispatcher, route
from citywatch.streams.rule_state import ChangelogState, encode_writes

log = logging.getLogger(__name__)


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


def make_faust_app(settings: Settings, bootstrap: str) -> faust.App:
    """A Faust app tuned for fast group joins (the embedded broker waits about half the
    session timeout on a first join), short fetch waits and frequent commits."""
    set_fetch_max_wait(settings.fetch_max_wait_ms)
    session = settings.broker_session_timeout
    return faust.App(
        settings.app_id, broker=faust_broker_urls(bootstrap), store="memory://",
        datadir=str(settings.data_dir), web_enabled=False, autodiscover=False,
        topic_partitions=settings.topic_partitions, topic_allow_declare=True,
        broker_session_timeout=session, broker_rebalance_timeout=session,
        broker_heartbeat_interval=max(0.1, session / 6),
        broker_commit_interval=settings.commit_interval,
        consumer_auto_offset_reset="earliest", producer_acks=1, producer_linger_ms=2)


def warn_split_zone_state(ruleset: RuleSet, partitions: int) -> None:
    """Zone-keyed state (zone windows, correlate) is only whole on one partition."""
    zoned = [r.id for r in ruleset.rules if isinstance(r.condition, Correlate)
             or (isinstance(r.condition, Window) and r.condition.zone_layer)]
    if zoned and partitions > 1:
        log.warning("rules %s keep state per zone, but events are partitioned by entity "
                    "over %d partitions: a zone's events may be split; use one partition",
                    ", ".join(zoned), partitions)


class Pipeline:
    """Everything one worker process runs, wired from one :class:`Settings`."""

    def __init__(self, settings: Settings, bootstrap: str | None = None) -> None:
        if bootstrap is None and settings.kafka_bootstrap is None:
            raise ValueError("no Kafka: set CITYWATCH_KAFKA_BOOTSTRAP")
        self.settings = settings
        self.bootstrap = bootstrap or settings.kafka_bootstrap or ""
        self.store = IncidentStore(settings.database_url,
                                   correlation_window=timedelta(hours=24))
        self.store.create_schema()
        self.rulesets = RuleSetBook(self.store)
        self.app = make_faust_app(settings, self.bootstrap)
        self.rule_state = ChangelogState()
        self.models = ModelRegistry(self.store)
        self.forecasts = ForecastBook()
        self.forecasts.refresh(self.models.newest_grids())
        applied = self.rulesets.current()
        ruleset = applied.parse() if applied else load_ruleset(settings.rules_path)
        self.engine = RuleEngine.from_ruleset(ruleset, self.rule_state, self.forecasts)
        warn_split_zone_state(ruleset, settings.topic_partitions)
        book = SubscriptionBook(self.store)
        self.subscriptions = SubscriptionCache(book)
        self.webhooks = WebhookDispatcher(book, timeout=settings.webhook_timeout_seconds,
                                          max_attempts=settings.webhook_max_attempts)
        self.ingest = RawIngest(settings, self.bootstrap)
        topics = settings.topics
        self.events_topic = self.app.topic(topics.events, value_serializer="raw",
                                           key_serializer="raw")
        self.alerts_topic = self.app.topic(topics.alerts, value_serializer="raw",
                                           key_serializer="raw")
        self.deadletter_topic = self.app.topic(topics.deadletter, value_serializer="raw",
                                               key_serializer="raw")
        self.state_topic = self.app.topic(topics.rule_state, value_serializer="raw",
                                          key_serializer="raw")
        self.app.agent(self.events_topic, name="evaluate")(self.evaluate)
        self.app.agent(self.alerts_topic, name="store_alerts")(self.store_alerts)
        self._team_topics: dict[str, faust.TopicT] = {}
        self.app.timer(interval=settings.rules_poll_seconds, name="reload_rules")(
            self.reload_rules)
        self.app.timer(interval=settings.forecast_poll_seconds, name="reload_forecasts")(
            self.reload_forecasts)
        self.app.on_before_shutdown.connect(self._close_webhooks)

    async def _close_webhooks(self, app: faust.App, **kwargs: object) -> None:
        await self.webhooks.close()

    async def _team_topic(self, team: str) -> faust.TopicT:
        topic = self._team_topics.get(team)
        if topic is None:
            topic = self.app.topic(self.settings.topics.team(team), value_serializer="raw",
                                   key_serializer="raw")
            await topic.maybe_declare()
            self._team_topics[team] = topic
        return topic

    async def reload_rules(self) -> None:
        """Swap in a newly applied rule set (validated when applied) without a restart."""
        applied = await asyncio.to_thread(self.rulesets.current)
        if applied is None or applied.version == self.engine.ruleset.version:
            return
        try:
            engine = await asyncio.to_thread(
                lambda: RuleEngine.from_ruleset(applied.parse(), self.rule_state,
                                                self.forecasts))
        except Exception:  # a rule set that cannot load here must not stop the worker
            log.exception("rule set %s could not be loaded; keeping %s", applied.version,
                          self.engine.ruleset.version)
            return
        log.warning("rules reloaded: %s -> %s (applied by %s)", self.engine.ruleset.version,
                    applied.version, applied.applied_by)
        warn_split_zone_state(engine.ruleset, self.settings.topic_partitions)
        self.engine = engine

    async def reload_forecasts(self) -> None:
        """Swap in forecast grids of models retrained since (hot swap, no restart)."""
        newest = await asyncio.to_thread(self.models.newest_grids)
        swapped = await asyncio.to_thread(self.forecasts.refresh, newest)
        if swapped:
            log.warning("forecast models swapped: %s", ", ".join(
                f"{key} -> {self.forecasts.grids[key].model_version}" for key in swapped))

    async def evaluate(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """events (micro-batches) → rules → one alert per message on ``alerts``.

        Stateful rules' changes reach the state table only after the frame's alerts are
        acknowledged, stamped with the frame's offset: a worker killed anywhere in
        between re-reads the frame and raises the same alerts (same ids) without
        applying the frame to its state twice.
        """
        async for event in stream.events():
            partition = event.message.partition
            if partition not in self.rule_state.recovered:
                await asyncio.to_thread(self._recover_state, partition)
            result = self.engine.process(decode_frame(event.value),
                                         position=event.message.offset)
            sent = [await self.alerts_topic.send(key=alert.id.encode(),
                                                 value=encode_alert(alert))
                    for alert in result.alerts]
            for envelope, rule_id, reason in result.late:
                letter = DeadLetter(stage="rules", source=self.settings.topics.events,
                                    locator=f"{rule_id}:{envelope.id}",
                                    error=f"late for rule {rule_id}: {reason}",
                                    raw=encode_envelope(envelope).decode())
                await self.deadletter_topic.send(value=encode_deadletter(letter))
            if result.state is not None and result.state.pending:
                await asyncio.gather(*sent)
                result.commit_state()
                await self.state_topic.send(value=encode_writes(self.rule_state.take_writes()),
                                            partition=partition)
            yield None

    def _recover_state(self, partition: int) -> None:
        """Replay the partition's state changelog before evaluating its first frame."""
        with KafkaAdmin(self.bootstrap) as admin:
            admin.ensure_topics([self.settings.topics.rule_state],
                                self.settings.topic_partitions)
            messages = admin.read_partition(self.settings.topics.rule_state, partition)
        applied = self.rule_state.recover(partition, (value for _, value in messages))
        if applied:
            log.warning("rule state of partition %d recovered from %d changelog messages",
                        partition, applied)

    async def store_alerts(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """alerts → incident store (in batches, idempotently) → team topics and webhooks."""
        loop = asyncio.get_running_loop()
        async for values in stream.take(500, within=0.2):
            alerts: list[Alert] = []
            payloads: dict[str, bytes] = {}
            for value in values:
                try:
                    alerts.append(decode_alert(value))
                    payloads[alerts[-1].id] = bytes(value)
                except msgspec.MsgspecError as exc:
                    letter = DeadLetter(stage="store", source=self.settings.topics.alerts,
                                        locator="alerts", error=f"not an alert: {exc}",
                                        raw=bytes(value).decode("utf-8", "replace"))
                    await self.deadletter_topic.send(value=encode_deadletter(letter))
            await loop.run_in_executor(None, self.store.add_alerts, alerts)
            for subscription, alert in route(await self.subscriptions.current(), alerts):
                topic = await self._team_topic(subscription.team)
                await topic.send(key=alert.id.encode(), value=payloads[alert.id])
                self.webhooks.submit(subscription, payloads[alert.id])
            yield None

    def run(self) -> None:
        """Run the worker until it receives SIGTERM or SIGINT."""
        # zones, rules and libraries are loaded: keep them out of every GC pass; and collect
        # the young generation less often: decoding a frame allocates thousands of short-
        # lived dicts, and the default threshold (700) spent half of ingest's decode time
        # in collections
        gc.freeze()
        gc.set_threshold(50_000, 20, 20)
        worker = faust.Worker(self.app, self.ingest, loglevel=self.settings.log_level,
                              quiet=True)
        worker.execute_from_commandline()
