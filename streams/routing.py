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
a worker died between a POST and recording it. Destinations are checked against a
:class:`~citywatch.streams.webhook_policy.WebhookPolicy` when connecting (resolved
addresses) and on every redirect (``307``/``308`` followed, at most 5; other redirects
are failures): a refused destination fails at once, without retries.

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
from yarl import URL

from citywatch.streams.webhook_policy import GuardedResolver, RefusedDestination, WebhookPolicy

log = logging.getLogger(__name__)
MAX_REDIRECTS = 5


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
    channel: Literal["topic", "webhook", "ngsi-ld"]
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
                 lease_seconds: float = 120.0, batch: int = 500,
                 policy: WebhookPolicy | None = None) -> None:
        self.queue = queue
        self.policy = policy or WebhookPolicy()
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
            if delivery.channel != "topic":  # webhooks and NGSI-LD brokers: HTTP POSTs
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
                error, permanent = await self._post(delivery)
                await self._record(delivery, error, permanent)
            except Exception:  # never lose the task: the lease hands it back later
                log.exception("webhook delivery %d not recorded", delivery.id)
            finally:
                self._in_flight.pop(delivery.id, None)
                queue.task_done()

    async def _post(self, delivery: Delivery) -> tuple[str | None, bool]:
        """One attempt: (the error or None when the endpoint took it, whether the error
        is permanent so retrying is pointless)."""
        if delivery.url is None:
            return f"the subscription has no {delivery.channel} destination any more", True
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout,
                connector=aiohttp.TCPConnector(resolver=GuardedResolver(self.policy)))
        headers = {"Content-Type": ("application/ld+json" if delivery.channel == "ngsi-ld"
                                    else "application/json"),
                   "X-Citywatch-Delivery": str(delivery.id),
                   "X-Citywatch-Alert": delivery.alert_id}
        url = delivery.url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                refused = self.policy.check_url(url)
                if refused is not None:
                    return f"{url}: {refused}", True
                async with self._session.post(url, data=delivery.payload, headers=headers,
                                              allow_redirects=False) as response:
                    if response.status == 207:  # an upsert's multi-status: some refused
                        return f"HTTP 207: {(await response.text())[:300]}", False
                    if 200 <= response.status < 300:
                        return None, False
                    location = response.headers.get("Location")
                    if response.status not in (307, 308) or not location:
                        return f"HTTP {response.status}", False
                    url = str(response.url.join(URL(location)))
            return f"more than {MAX_REDIRECTS} redirects", False
        except RefusedDestination as exc:
            return str(exc), True
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedDestination):
                return str(exc.os_error), True
            return f"{type(exc).__name__}: {exc}", False
        except (aiohttp.ClientError, TimeoutError) as exc:
            return (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                    False)

    async def _record(self, delivery: Delivery, error: str | None,
                      permanent: bool = False) -> None:
        if error is None:
            self.delivered[delivery.subscription_id] = (
                self.delivered.get(delivery.subscription_id, 0) + 1)
            await asyncio.to_thread(self.queue.delivered, [delivery.id])
            return
        attempt = delivery.attempts + 1
        final = attempt >= self.max_attempts or permanent
        retry_in = None if final else self.backoff * 2 ** delivery.attempts
        await asyncio.to_thread(self.queue.attempt_failed, delivery, error, retry_in)
        if final:
            reason = f"{delivery.channel} failed after {attempt} attempt(s): {error}"
            log.warning("delivery %d of alert %s to subscription %s: %s", delivery.id,
                        delivery.alert_id, delivery.subscription_id, reason)
            await self.dead_letter(delivery, reason)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
