"""Team deliveries: alerts owed to subscriptions, taken from a durable outbox and sent to
``alerts.team.<team>`` topics and webhooks.

The incident store writes one delivery per (matching subscription, channel) in the
transaction that stores a **new** alert, so a replay owes nothing again and a worker
killed after the write still owes it. :class:`Deliverer` claims due deliveries for a
lease, sends them and records the outcome in the store: a failed webhook attempt is
retried later with exponential backoff (from the store, so retries survive a restart);
after the last attempt the delivery is marked failed and handed to ``dead_letter``.
Each subscription's webhooks go through their own queue and task, with a timeout per
request: an endpoint that hangs delays only its own deliveries. Webhook requests carry
``X-Citywatch-Delivery`` (the delivery id) so a receiver can drop the rare repeat after
a worker died between a POST and recording it.

Example:
    >>> deliverer = Deliverer(outbox, send_topic, dead_letter,            # doctest: +SKIP
    ...                       timeout=5, max_attempts=5)
    >>> await deliverer.run_once()      # claims, sends, records       # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Literal, Protocol

import aiohttp
import msgspec

log = logging.getLogger(__name__)


class Delivery(msgspec.Struct, frozen=True):
    """One alert owed to one subscription on one channel.

    Example:
        >>> d = Delivery(id=7, subscription_id="s1", team="air", alert_id="a1",
        ...              channel="webhook", payload=b"{}", attempts=2,
        ...              url="https://air.example/hook")
        >>> d.attempts + 1   # the attempt this one would be
        3
    """

    id: int
    subscription_id: str
    team: str
    alert_id: str
    channel: Literal["topic", "webhook"]
    payload: bytes
    attempts: int  # attempts made before this one
    url: str | None = None  # the subscription's webhook now (None: no longer has one)


class DeliveryQueue(Protocol):
    """The durable outbox (the incident store implements it)."""

    def claim(self, limit: int, lease_seconds: float, exclude: Collection[int],
              busy: Collection[str] = (), per_webhook: int = 10) -> list[Delivery]:
        """Due deliveries, leased to the caller for ``lease_seconds``: at most
        ``per_webhook`` webhooks per subscription, none for ``busy`` subscriptions."""
        ...

    def delivered(self, ids: Collection[int]) -> None: ...

    def attempt_failed(self, delivery: Delivery, error: str, retry_in: float | None,
                       ) -> None:
        """Record a failed attempt; ``retry_in`` None means it was the last one."""
        ...


SendTopic = Callable[[str, bytes, bytes], Awaitable[None]]  # team, key, payload
DeadLetter = Callable[[Delivery, str], Awaitable[None]]  # delivery, reason


class Deliverer:
    """Claims due deliveries from the outbox and sends them (see the module docs)."""

    def __init__(self, queue: DeliveryQueue, send_topic: SendTopic, dead_letter: DeadLetter,
                 *, timeout: float, max_attempts: int, backoff: float = 0.5,
                 lease_seconds: float = 120.0, batch: int = 500) -> None:
        self.queue = queue
        self.send_topic = send_topic
        self.dead_letter = dead_letter
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.delivered: dict[str, int] = {}  # subscription id -> webhooks delivered
        self._in_flight: dict[int, str] = {}  # delivery id -> subscription id
        self._queues: dict[str, asyncio.Queue[Delivery]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def run_once(self) -> int:
        """Claim what is due and send it; returns how many deliveries were claimed.
        Team topic messages are sent (and acknowledged) before this returns; webhooks
        are queued to their subscription's task."""
        # a subscription's webhooks are sent one after another, each within the timeout:
        # hold no more than fit in half the lease, and none more while it is still busy
        per_webhook = max(1, int(self.lease_seconds / 2 / self.timeout.total))
        busy = frozenset(self._in_flight.values())
        claimed = await asyncio.to_thread(self.queue.claim, self.batch, self.lease_seconds,
                                          frozenset(self._in_flight), busy, per_webhook)
        topics = [d for d in claimed if d.channel == "topic"]
        await asyncio.gather(*(self.send_topic(d.team, d.alert_id.encode(), d.payload)
                               for d in topics))
        if topics:
            await asyncio.to_thread(self.queue.delivered, [d.id for d in topics])
        for delivery in claimed:
            if delivery.channel == "webhook":
                self._in_flight[delivery.id] = delivery.subscription_id
                self._queue_of(delivery.subscription_id).put_nowait(delivery)
        return len(claimed)

    def _queue_of(self, subscription_id: str) -> asyncio.Queue[Delivery]:
        queue = self._queues.get(subscription_id)
        if queue is None:
            queue = self._queues[subscription_id] = asyncio.Queue()
            self._tasks[subscription_id] = asyncio.create_task(
                self._deliver(queue), name=f"webhook-{subscription_id}")
        return queue

    async def _deliver(self, queue: asyncio.Queue[Delivery]) -> None:
        while True:
            delivery = await queue.get()
            try:
                error = await self._post(delivery)
                await self._record(delivery, error)
            except Exception:  # never lose the task: the lease hands it back later
                log.exception("webhook delivery %d not recorded", delivery.id)
            finally:
                self._in_flight.pop(delivery.id, None)
                queue.task_done()

    async def _post(self, delivery: Delivery) -> str | None:
        """One attempt; the error, or None when the endpoint took it."""
        if delivery.url is None:
            return "the subscription has no webhook any more"
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers = {"Content-Type": "application/json",
                   "X-Citywatch-Delivery": str(delivery.id),
                   "X-Citywatch-Alert": delivery.alert_id}
        try:
            async with self._session.post(delivery.url, data=delivery.payload,
                                          headers=headers) as response:
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _record(self, delivery: Delivery, error: str | None) -> None:
        if error is None:
            self.delivered[delivery.subscription_id] = (
                self.delivered.get(delivery.subscription_id, 0) + 1)
            await asyncio.to_thread(self.queue.delivered, [delivery.id])
            return
        attempt = delivery.attempts + 1
        final = attempt >= self.max_attempts or delivery.url is None
        retry_in = None if final else self.backoff * 2 ** delivery.attempts
        await asyncio.to_thread(self.queue.attempt_failed, delivery, error, retry_in)
        if final:
            reason = f"webhook failed after {attempt} attempt(s): {error}"
            log.warning("delivery %d of alert %s to subscription %s: %s", delivery.id,
                        delivery.alert_id, delivery.subscription_id, reason)
            await self.dead_letter(delivery, reason)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
