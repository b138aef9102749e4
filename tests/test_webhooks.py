"""Webhook delivery is isolated per subscription: an endpoint that never answers does
not delay another team's deliveries; its failures are counted in the store."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from factories import make_alert

from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.subscriptions import SubscriptionBook
from citywatch.streams.alert import encode_alert
from citywatch.streams.routing import SubscriptionCache, WebhookDispatcher, route
from citywatch.streams.subscriptions import Subscription, SubscriptionIn


class _Recorder(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def good_server() -> Iterator[tuple[str, list[bytes]]]:
    handler = type("Recorder", (_Recorder,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler.received
    server.shutdown()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


def test_hanging_endpoint_does_not_delay_other_team(store: IncidentStore, good_server,
                                                     silent_server: str) -> None:
    good_url, received = good_server
    book = SubscriptionBook(store)
    fast = book.create(SubscriptionIn(team="fire", domains=["environment"],
                                      webhook_url=good_url), actor="test")
    stuck = book.create(SubscriptionIn(team="air", domains=["environment"],
                                       webhook_url=silent_server), actor="test")
    alerts = [make_alert(i) for i in range(5)]
    pairs = route(book.list(active_only=True), alerts)
    assert len(pairs) == 10

    async def scenario() -> tuple[int, int]:
        dispatcher = WebhookDispatcher(book, timeout=3.0, max_attempts=2, backoff=0.05)
        for subscription, alert in pairs:
            dispatcher.submit(subscription, encode_alert(alert))
        while dispatcher.delivered.get(fast.id, 0) < 5:
            await asyncio.sleep(0.01)
        # all five reached the healthy endpoint while the first request to the silent
        # one is still waiting for its answer
        stuck_failures_then = book.get(stuck.id).failures
        while book.get(stuck.id).failures < 1:
            await asyncio.sleep(0.05)
        await dispatcher.close()
        return stuck_failures_then, dispatcher.delivered.get(stuck.id, 0)

    stuck_failures_when_fast_done, stuck_delivered = asyncio.run(scenario())
    assert len(received) == 5
    assert stuck_failures_when_fast_done == 0
    assert stuck_delivered == 0
    after = book.get(stuck.id)
    assert after.failures >= 1 and "Timeout" in (after.last_error or "")
    assert book.get(fast.id).failures == 0


def test_routing_survives_a_store_that_cannot_be_read() -> None:
    """While the store is down the store stage keeps routing by the last list read."""
    now = datetime.now(UTC)
    known = [Subscription(id="s1", team="air", created_at=now, updated_at=now)]

    class FlakyBook:
        calls = 0

        def list(self, team: str | None = None, active_only: bool = False) -> list:
            FlakyBook.calls += 1
            if FlakyBook.calls > 1:
                raise ConnectionError("connection refused")
            return known

        def record_delivery(self, subscription_id: str, error: str | None) -> None:
            pass

    cache = SubscriptionCache(FlakyBook(), ttl=0.0)
    assert asyncio.run(cache.current()) == known
    assert asyncio.run(cache.current()) == known and FlakyBook.calls == 2
