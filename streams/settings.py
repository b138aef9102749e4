"""The stream layer's settings: Kafka, topics, framing and worker timing.

``citywatch.ops.settings.Settings`` extends this class with the store, API and rule
settings; the stream layer takes any instance of it, so one settings object is passed
down from the composition root.

Example:
    >>> s = StreamSettings(kafka_bootstrap="kafka:9092", topic_prefix="city.")
    >>> s.topics.alerts
    'city.alerts'
    >>> StreamSettings(**s.model_dump()).kafka_bootstrap
    'kafka:9092'
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from citywatch.streams.topics import TopicNames


def _split_commas(value: object) -> object:
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(
        value, str) else value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list setting given in the environment as ``a,b,c``."""


class StreamSettings(BaseSettings):
    """Stream-layer configuration; every field can be set as ``CITYWATCH_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="CITYWATCH_", extra="forbid")

    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port[,host:port]); unset = start the "
        "embedded in-memory broker.")
    topic_prefix: str = Field(default="citywatch.", description="Prefix of every topic name.")
    topic_partitions: int = Field(default=1, ge=1, description="Partitions of created topics.")
    app_id: str = Field(default="citywatch", description="Faust app id / consumer group.")
    data_dir: Path = Field(
        default_factory=lambda: platformdirs.user_data_path("citywatch"),
        description="Where citywatch keeps its state: the default SQLite store, connector "
                    "checkpoints, worker state and logs (default: the user data directory, "
                    "e.g. ~/.local/share/citywatch).")
    batch_max_events: int = Field(default=500, ge=1,
                                  description="Envelopes per internal micro-batch.")
    batch_max_wait_ms: int = Field(default=20, ge=0,
                                   description="Longest wait to fill a micro-batch.")
    store_batch: int = Field(default=500, ge=1,
                             description="Most alerts the store stage writes in one "
                                         "transaction.")
    store_batch_wait_ms: int = Field(default=50, ge=0,
                                     description="Longest wait to fill a store batch.")
    broker_session_timeout: float = Field(
        default=6.0, gt=0,
        description="Consumer session timeout (s). Low values make group joins on the "
        "embedded broker fast; raise it on busy production clusters.")
    fetch_max_wait_ms: int = Field(
        default=50, ge=1, le=30000,
        description="Longest time a worker's fetch waits for new data (Faust's fixed 1.5 s "
                    "stalls the embedded broker's agents).")
    idle_partition_seconds: float = Field(
        default=120.0, gt=0,
        description="A partition that sends the zone stage nothing this long stops "
                    "holding back its zones' time (zone windows close without it; its "
                    "events older than the others' time by more than the allowed "
                    "lateness are late when it resumes).")
    commit_interval: float = Field(default=0.5, gt=0, description="Offset commit interval (s).")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Serve the worker's Prometheus metrics on this port (/metrics); unset: "
                    "none.")
    log_level: Literal["critical", "error", "warn", "info", "debug"] = Field(
        default="warn", description="Worker log level.")
    rules_poll_seconds: float = Field(default=2.0, gt=0,
                                      description="How often workers look for a newly "
                                                  "applied rule set.")
    forecast_poll_seconds: float = Field(
        default=30.0, gt=0, description="How often workers look for retrained forecast models.")
    event_time_max_ahead_seconds: float = Field(
        default=86400.0, gt=0,
        description="Events stamped further ahead of the time ingest receives them are "
                    "dead-lettered (one bad clock must not move stream time).")
    event_time_floor: datetime = Field(
        default=datetime(1970, 1, 1, tzinfo=UTC),
        description="Events stamped before this time are dead-lettered.")
    max_alert_bytes: int = Field(
        default=900_000, ge=10_000,
        description="Largest alert message; a larger alert's free text is truncated "
                    "with a marker (keep below the broker's message.max.bytes).")
    broker_check_seconds: float = Field(
        default=5.0, gt=0, description="How often a worker checks that its broker still "
                                       "has its topics and that the rules stage progresses.")
    broker_lost_seconds: float = Field(
        default=120.0, gt=0,
        description="A worker whose broker stays unreachable (or whose rules stage commits "
                    "nothing while events wait) this long exits with status 75 for its "
                    "supervisor to restart it.")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0,
                                           description="Per-request webhook timeout.")
    webhook_max_attempts: int = Field(default=5, ge=1,
                                      description="Webhook delivery attempts per alert.")
    webhook_backoff_seconds: float = Field(
        default=1.0, gt=0, description="Wait before the second webhook attempt; doubles "
                                       "for each further attempt.")
    webhook_allow: CommaList = Field(
        default=[], description="Webhook hosts, addresses or CIDR blocks allowed although "
                                "private, loopback or plain http (comma-separated).")
    delivery_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often a worker sends what the delivery outbox "
                                       "owes teams (topics and webhooks).")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_chars(cls, value: str) -> str:
        if any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-"
               for c in value):
            raise ValueError("may only contain letters, digits, '.', '_' and '-'")
        return value

    @property
    def topics(self) -> TopicNames:
        return TopicNames(self.topic_prefix)

    def to_env(self) -> dict[str, str]:
        """These settings as ``CITYWATCH_*`` variables, to hand to a child process."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, list):
                env[f"CITYWATCH_{name.upper()}"] = ",".join(map(str, value))
            elif value is not None:
                env[f"CITYWATCH_{name.upper()}"] = str(value)
        return env
