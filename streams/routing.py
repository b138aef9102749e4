"""Team routing: alerts → matching subscriptions → ``alerts.team.<team>`` topics and
webhooks.

Webhook delivery is isolated per subscription: each has its own bounded queue and
delivery task, with a timeout per request, exponential backoff between attempts, and a
failure counter in the store. A hanging endpoint delays only its own queue.

Example:
    >>> dispatcher = WebhookDispatcher(book, timeout=5, max_attempts=5)   # doctest: +SKIP
    >>> dispatcher.submit(subscription, b'{"id": "..."}')                 # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import aiohttp

from citywatch.streams.subscriptions import Subscription, matching

log = logging.getLogger(__name__)


class SubscriptionBook(Protocol):
    """Where subscriptions are kept (the incident store implements it)."""

    def list(self, team: str | None = None, active_only: bool = False,
             ) -> list[Subscription]: ...

    def record_delivery(self, subscription_id: str, error: str | None) -> None: ...


class SubscriptionCache:
    """Active subscriptions, re-read from the store at most every ``ttl`` seconds."""

    def __init__(self, book: SubscriptionBook, ttl: float = 5.0) -> None:
        self.book = book
        self.ttl = ttl
        self._items: list[Subscription] = []
        self._loaded = -float("inf")

    async def current(self) -> list[Subscription]:
        """The active subscriptions; while the store cannot be read, the last list read
        (routing goes on, the stage never dies of an outage)."""
        if time.monotonic() - self._loaded > self.ttl:
            try:
                self._items = await asyncio.to_thread(self.book.list, None, True)
            except Exception as exc:
                log.warning("subscriptions not refreshed (%s); routing by the last %d read",
                            exc, len(self._items))
            self._loaded = time.monotonic()
        return self._items


def route(subscriptions: Sequence[Subscription], alerts: Sequence[Any],
          ) -> list[tuple[Subscription, Any]]:
    """Every (subscription, alert) pair to deliver."""
    return [(sub, alert) for alert in alerts for sub in matching(subscriptions, alert)]


class WebhookDispatcher:
    """Delivers payloads to subscriptions' webhooks, one independent queue each."""

    def __init__(self, book: SubscriptionBook, *, timeout: float, max_attempts: int,
                 backoff: float = 0.5, queue_size: int = 10_000) -> None:
        self.book = book
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.queue_size = queue_size
        self.delivered: dict[str, int] = {}
        self._queues: dict[str, asyncio.Queue[bytes]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._urls: dict[str, str] = {}
        self._session: aiohttp.ClientSession | None = None

    def submit(self, subscription: Subscription, payload: bytes) -> None:
        """Queue ``payload`` for the subscription's webhook; never blocks."""
        if subscription.webhook_url is None:
            return
        sid = subscription.id
        self._urls[sid] = str(subscription.webhook_url)
        queue = self._queues.get(sid)
        if queue is None:
            queue = self._queues[sid] = asyncio.Queue(self.queue_size)
            self._tasks[sid] = asyncio.create_task(self._deliver(sid, queue),
                                                   name=f"webhook-{sid}")
        try:
            queue.put_nowait(payload)
        except asyncio.QueueFull:
            log.warning("webhook queue of subscription %s is full; alert not delivered", sid)
            self._record(sid, "queue full: endpoint too slow")

    def _record(self, sid: str, error: str | None) -> None:
        asyncio.get_running_loop().run_in_executor(None, self.book.record_delivery, sid, error)

    async def _deliver(self, sid: str, queue: asyncio.Queue[bytes]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        while True:
            payload = await queue.get()
            for attempt in range(self.max_attempts):
                try:
                    async with self._session.post(
                            self._urls[sid], data=payload,
                            headers={"Content-Type": "application/json"}) as response:
                        if 200 <= response.status < 300:
                            self.delivered[sid] = self.delivered.get(sid, 0) + 1
                            break
                        error = f"HTTP {response.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                self._record(sid, error)
                if attempt + 1 < self.max_attempts:
                    await asyncio.sleep(self.backoff * 2 ** attempt)
            queue.task_done()

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
