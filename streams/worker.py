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

import faust
import msgspec

from citywatch.ops.settings import Settings
from citywatch.ops.store.rulesets import RuleSetBook
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.subscriptions import SubscriptionBook
from citywatch.rules.alert import Alert, decode_alert, encode_alert
from citywatch.rules.engine import RuleEngine
from citywatch.rules.loader import load_ruleset
from citywatch.streams.batch import decode_batch
from citywatch.streams.deadletter import DeadLetter, encode_deadletter
from citywatch.streams.ingest import RawIngest
from citywatch.streams.routing import SubscriptionCache, WebhookDispatcher, route

log = logging.getLogger(__name__)


def faust_broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def make_faust_app(settings: Settings, bootstrap: str) -> faust.App:
    """A Faust app tuned for fast group joins (the embedded broker waits about half the
    session timeout on a first join) and frequent commits."""
    session = settings.broker_session_timeout
    return faust.App(
        settings.app_id, broker=faust_broker_urls(bootstrap), store="memory://",
        datadir=str(settings.data_dir), web_enabled=False, autodiscover=False,
        topic_partitions=settings.topic_partitions, topic_allow_declare=True,
        broker_session_timeout=session, broker_rebalance_timeout=session,
        broker_heartbeat_interval=max(0.1, session / 6),
        broker_commit_interval=settings.commit_interval,
        consumer_auto_offset_reset="earliest", producer_acks=1, producer_linger_ms=2)


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
        applied = self.rulesets.current()
        ruleset = applied.parse() if applied else load_ruleset(settings.rules_path)
        self.engine = RuleEngine.from_ruleset(ruleset)
        book = SubscriptionBook(self.store)
        self.subscriptions = SubscriptionCache(book)
        self.webhooks = WebhookDispatcher(book, timeout=settings.webhook_timeout_seconds,
                                          max_attempts=settings.webhook_max_attempts)
        self.app = make_faust_app(settings, self.bootstrap)
        self.ingest = RawIngest(settings, self.bootstrap)
        topics = settings.topics
        self.events_topic = self.app.topic(topics.events, value_serializer="raw",
                                           key_serializer="raw")
        self.alerts_topic = self.app.topic(topics.alerts, value_serializer="raw",
                                           key_serializer="raw")
        self.deadletter_topic = self.app.topic(topics.deadletter, value_serializer="raw",
                                               key_serializer="raw")
        self.app.agent(self.events_topic, name="evaluate")(self.evaluate)
        self.app.agent(self.alerts_topic, name="store_alerts")(self.store_alerts)
        self._team_topics: dict[str, faust.TopicT] = {}
        self.app.timer(interval=settings.rules_poll_seconds, name="reload_rules")(
            self.reload_rules)
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
            engine = await asyncio.to_thread(lambda: RuleEngine.from_ruleset(applied.parse()))
        except Exception:  # a rule set that cannot load here must not stop the worker
            log.exception("rule set %s could not be loaded; keeping %s", applied.version,
                          self.engine.ruleset.version)
            return
        log.warning("rules reloaded: %s -> %s (applied by %s)", self.engine.ruleset.version,
                    applied.version, applied.applied_by)
        self.engine = engine

    async def evaluate(self, stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        """events (micro-batches) → rules → one alert per message on ``alerts``."""
        async for payload in stream:
            alerts = self.engine.evaluate(decode_batch(payload))
            for alert in alerts:
                await self.alerts_topic.send(key=alert.id.encode(), value=encode_alert(alert))
            yield None

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
        # zones, rules and libraries are loaded: keep them out of every GC pass
        gc.freeze()
        worker = faust.Worker(self.app, self.ingest, loglevel=self.settings.log_level,
                              quiet=True)
        worker.execute_from_commandline()
