"""The ``mqtt`` connector: subscribe to topics (QoS 1) with paho-mqtt.

Payloads are JSON objects mapped by a declarative ``mapping``, or SenML packs
(RFC 8428; ``payload: senml``): the records of a pack that share a base name and time
become one envelope whose attributes are the record names and values, with ``lat``/``lon``
records, if present, as its location.

Messages are acknowledged to the broker only at a checkpoint, i.e. after the runner has
flushed them to Kafka; with a fixed ``client_id`` and ``clean_session: false`` the broker
keeps the session, so a connector that stops and restarts loses nothing.

Example config:

    name: city-sensors
    host: 127.0.0.1
    topics: ["city/air/#"]
    payload: senml
    domain: environment
    kind: air_quality.observed
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from pydantic import BaseModel, ConfigDict, Field, model_validator

from citywatch.connectors.base import Source, SourceItem
from citywatch.connectors.config import validate_config
from citywatch.connectors.mapping import FeedMapping
from citywatch.streams.envelope import AttributeValue, Domain, EnvelopeError


class MqttConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topics: list[str] = Field(min_length=1)
    client_id: str | None = None
    clean_session: bool = False
    payload: Literal["json", "senml"] = "json"
    mapping: dict[str, Any] | None = None
    domain: Domain | None = None
    kind: str | None = None
    max_messages: int | None = Field(default=None, ge=1, description="stop after N")
    idle_timeout: float | None = Field(default=None, gt=0,
                                       description="stop after N s without messages")

    @model_validator(mode="after")
    def _payload_needs(self) -> MqttConfig:
        if self.payload == "json" and self.mapping is None:
            raise ValueError("payload json needs a mapping")
        if self.payload == "senml" and (self.domain is None or self.kind is None):
            raise ValueError("payload senml needs domain and kind")
        return self


def senml_events(pack: Any) -> list[dict[str, Any]]:
    """Group a SenML pack into ``{entity, time, attributes}`` per base name and time."""
    if not isinstance(pack, list) or not pack:
        raise EnvelopeError("a SenML pack is a non-empty JSON array")
    groups: dict[tuple[str, float], dict[str, AttributeValue]] = {}
    base_name, base_time = "", 0.0
    for i, record in enumerate(pack):
        if not isinstance(record, dict):
            raise EnvelopeError("a SenML record is an object", field=f"[{i}]")
        base_name = record.get("bn", base_name)
        base_time = float(record.get("bt", base_time))
        name = record.get("n", "")
        value = next((record[k] for k in ("v", "vs", "vb") if k in record), None)
        if value is None or not name:
            raise EnvelopeError("a SenML record needs n and one of v, vs, vb",
                                field=f"[{i}]")
        when = base_time + float(record.get("t", 0.0))
        groups.setdefault((base_name, when), {})[name] = value
    events = []
    for (entity, when), attributes in groups.items():
        if when < 2**28:
            raise EnvelopeError("relative SenML times are not supported", field="bt")
        events.append({"entity": entity.rstrip(":/") or "senml", "time": when,
                       "attributes": attributes})
    return events


class MqttSource(Source):
    """Subscribes with QoS 1; acknowledges messages at checkpoints."""

    summary = "subscribe to MQTT topics (QoS 1), JSON or SenML payloads"

    def __init__(self, config: MqttConfig) -> None:
        self.config = config
        self.mapping = FeedMapping.for_feed(config.name, config.mapping)
        super().__init__(config.name, self.mapping.domain if self.mapping else config.domain)
        self._inbox: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._unacked: list[int] = []
        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        self.received = 0
        self.ack_every = 10

    @classmethod
    def from_config(cls, config: dict[str, Any], base_dir: Path) -> MqttSource:
        return cls(validate_config(MqttConfig, config, source=""))

    def _connect(self) -> paho.Client:
        client = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=self.config.client_id or f"citywatch-{self.name}",
                             clean_session=self.config.clean_session, manual_ack=True)

        def on_connect(client: paho.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
            client.subscribe([(topic, 1) for topic in self.config.topics])

        client.on_connect = on_connect
        client.on_message = lambda c, u, message: self._inbox.put(message)
        client.connect(self.config.host, self.config.port, keepalive=30)
        client.loop_start()
        return client

    @property
    def wants_checkpoint(self) -> bool:
        """Brokers deliver only a few unacknowledged QoS 1 messages at a time (Mosquitto:
        20), so ask for a checkpoint — which acknowledges — well before that."""
        return len(self._unacked) >= self.ack_every

    def checkpoint(self) -> dict[str, Any]:
        """Acknowledge everything yielded so far (it has reached Kafka), and wait until
        the broker has processed the acknowledgements."""
        with self._lock:
            pending, self._unacked = self._unacked, []
        if self._client is not None and pending:
            for mid in pending:
                self._client.ack(mid, 1)
            self._barrier(self._client)
        return {"client_id": self.config.client_id or f"citywatch-{self.name}"}

    @staticmethod
    def _barrier(client: paho.Client, timeout: float = 10.0) -> None:
        """One UNSUBSCRIBE round trip: MQTT processes a connection's packets in order,
        so its UNSUBACK means every PUBACK sent before it has been processed."""
        confirmed: set[int] = set()
        arrived = threading.Condition()

        def on_unsubscribe(c: paho.Client, userdata: Any, unsub_mid: int, *rest: Any) -> None:
            with arrived:
                confirmed.add(unsub_mid)
                arrived.notify_all()

        previous, client.on_unsubscribe = client.on_unsubscribe, on_unsubscribe
        try:
            _, mid = client.unsubscribe(f"citywatch/barrier/{id(confirmed)}")
            with arrived:
                if not arrived.wait_for(lambda: mid in confirmed, timeout):
                    raise TimeoutError("MQTT broker did not confirm acknowledgements")
        finally:
            client.on_unsubscribe = previous

    def run(self) -> Iterator[SourceItem | None]:
        self._client = self._connect()
        idle_since = datetime.now(UTC)
        try:
            while self.running:
                if self.config.max_messages and self.received >= self.config.max_messages:
                    return
                try:
                    message = self._inbox.get(timeout=0.1)
                except queue.Empty:
                    idle = (datetime.now(UTC) - idle_since).total_seconds()
                    if self.config.idle_timeout and idle > self.config.idle_timeout:
                        return
                    yield None  # idle tick: lets the runner checkpoint (acknowledge)
                    continue
                idle_since = datetime.now(UTC)
                self.received += 1
                with self._lock:  # handed out now: acknowledged at the next checkpoint
                    self._unacked.append(message.mid)
                yield from self.items(message.topic, message.payload, self.received)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        """Disconnect (after the runner's final checkpoint acknowledged what it sent)."""
        if self._client is not None:
            # disconnect first: the network loop sends queued PUBACKs before DISCONNECT
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def items(self, topic: str, payload: bytes, sequence: int) -> Iterator[SourceItem]:
        """Envelopes and dead letters for one message."""
        locator = f"mqtt://{self.config.host}:{self.config.port}/{topic}#{sequence}"
        raw = payload.decode("utf-8", "replace")
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            yield self.reject(f"payload is not JSON: {exc.msg}", locator=locator, raw=raw)
            return
        try:
            if self.mapping is not None:
                if not isinstance(data, dict):
                    raise EnvelopeError("a JSON payload must be an object")
                yield self.mapping.to_envelope({**data, "mqtt_topic": topic},
                                               locator=locator, received_at=datetime.now(UTC))
                return
            for event in senml_events(data):
                attrs = dict(event["attributes"])
                lon, lat = attrs.pop("lon", None), attrs.pop("lat", None)
                geometry = ({"type": "Point", "coordinates": [lon, lat]}
                            if isinstance(lon, int | float) and isinstance(lat, int | float)
                            else None)
                yield self.envelope(record_id=f"{event['entity']}/{event['time']}",
                                    kind=self.config.kind or "", entity_id=event["entity"],
                                    time=datetime.fromtimestamp(event["time"], UTC),
                                    geometry=geometry, attributes=attrs, locator=locator)
        except EnvelopeError as exc:
            yield self.reject(exc.with_locator(locator), locator=locator, raw=raw)
