"""Team deliveries from the durable outbox, against real HTTP endpoints and the real
store: owed once per new alert (a replay posts nothing again), isolated per subscription
(a hanging endpoint delays no other team), retried from the store (a restart in the
middle of retries still delivers), and dead-lettered and visible after the last
attempt."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from factories import make_alert

from citywatch.ops.settings import Settings
from citywatch.ops.store.outbox import Outbox
from citywatch.ops.store.sink import StoreSink
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.subscriptions import SubscriptionBook
from citywatch.ops.store.tokens import TokenBook
from citywatch.streams.broker import free_port
from citywatch.streams.routing import Deliverer, Delivery
from citywatch.streams.subscriptions import SubscriptionIn
from citywatch.streams.webhook_policy import WebhookPolicy


class _Recorder(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(body)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def recording_server(port: int = 0) -> Iterator[tuple[str, list[bytes]]]:
    handler = type("Recorder", (_Recorder,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", handler.received
    server.shutdown()
    server.server_close()


@pytest.fixture
def good_server() -> Iterator[tuple[str, list[bytes]]]:
    with recording_server() as served:
        yield served


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(100)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    sock.close()


class Sent:
    """What the deliverer hands on: team topic messages and dead letters (the worker
    sends these to Kafka; the pipeline tests cover that path)."""

    def __init__(self) -> None:
        self.topics: list[tuple[str, bytes]] = []
        self.dead: list[tuple[Delivery, str]] = []

    async def topic(self, team: str, key: bytes, payload: bytes) -> None:
        self.topics.append((team, key))

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.dead.append((delivery, reason))


def deliverer(store: IncidentStore, sent: Sent, **options: float) -> Deliverer:
    settings = {"timeout": 3.0, "max_attempts": 3, "backoff": 0.05} | options
    return Deliverer(Outbox(store), sent.topic, sent.dead_letter, **settings,
                     policy=WebhookPolicy(["127.0.0.1"]))


async def until(check: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def store_alerts(store: IncidentStore, alerts: list) -> set[str]:
    return StoreSink(store, Outbox(store)).add_new_alerts(alerts)


def test_a_replay_owes_and_posts_nothing_again(store: IncidentStore, good_server) -> None:
    url, received = good_server
    book = SubscriptionBook(store)
    book.create(SubscriptionIn(team="air", domains=["environment"], webhook_url=url),
                actor="test")
    alerts = [make_alert(i) for i in range(5)]
    sent = Sent()

    async def run() -> None:
        d = deliverer(store, sent)
        await d.run_once()
        await until(lambda: len(received) == 5)
        assert store_alerts(store, alerts) == set()  # the replay: nothing new
        assert await d.run_once() == 0
        await d.close()

    assert len(store_alerts(store, alerts)) == 5
    asyncio.run(run())
    assert len(received) == 5 and len(sent.topics) == 5
    assert {key.decode() for _, key in sent.topics} == {a.id for a in alerts}


def test_hanging_endpoint_does_not_delay_other_team(store: IncidentStore, good_server,
                                                     silent_server: str) -> None:
    good_url, received = good_server
    book = SubscriptionBook(store)
    fast = book.create(SubscriptionIn(team="fire", domains=["environment"],
                                      webhook_url=good_url), actor="test")
    stuck = book.create(SubscriptionIn(team="air", domains=["environment"],
                                       webhook_url=silent_server), actor="test")
    store_alerts(store, [make_alert(i) for i in range(5)])
    sent = Sent()

    async def scenario() -> int:
        d = deliverer(store, sent)
        await d.run_once()
        await until(lambda: d.delivered.get(fast.id, 0) == 5)
        # all five reached the healthy endpoint while the first request to the silent
        # one is still waiting for its answer
        stuck_failures_then = book.get(stuck.id).failures
        await until(lambda: book.get(stuck.id).failures >= 1)
        await d.close()
        return stuck_failures_then

    assert asyncio.run(scenario()) == 0
    assert len(received) == 5
    after = book.get(stuck.id)
    assert after.failures >= 1 and "Timeout" in (after.last_error or "")
    assert book.get(fast.id).failures == 0


def test_endpoint_down_through_every_attempt_is_a_dead_letter_and_visible(
        store: IncidentStore, tmp_path) -> None:
    book = SubscriptionBook(store)
    down = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    sub = book.create(SubscriptionIn(team="air", domains=["environment"], webhook_url=down),
                      actor="test")
    store_alerts(store, [make_alert(i) for i in range(3)])
    sent = Sent()

    async def run() -> None:
        d = deliverer(store, sent, max_attempts=3)
        while len(sent.dead) < 3:
            await d.run_once()
            await asyncio.sleep(0.05)
        await d.close()

    asyncio.run(run())
    assert {reason.split(":")[0] for _, reason in sent.dead} == {
        "webhook failed after 3 attempt(s)"}
    failed = Outbox(store).list(sub.id, "failed")
    assert len(failed) == 3 and all(row.attempts == 3 for row in failed)
    assert "ClientConnectorError" in failed[0].last_error
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

        from citywatch.ops.api.app import create_api
    token = TokenBook(store).issue("viewer-user", "viewer")
    app = create_api(Settings(database_url=store.url, data_dir=tmp_path,
                              webhook_allow=["127.0.0.1"]), store)
    with TestClient(app) as client:
        listed = client.get(f"/subscriptions/{sub.id}/deliveries", params={"status": "failed"},
                            headers={"Authorization": f"Bearer {token}"}).json()
    assert len(listed) == 3 and {row["channel"] for row in listed} == {"webhook"}


def test_a_restart_in_the_middle_of_retries_still_delivers(store: IncidentStore) -> None:
    """The first worker's attempt fails (nothing listens) and it stops; the endpoint comes
    up; a new deliverer over a new store connection (the restarted worker: nothing of the
    first survives but the store) delivers every alert, once."""
    port = free_port()
    book = SubscriptionBook(store)
    book.create(SubscriptionIn(team="air", domains=["environment"],
                               webhook_url=f"http://127.0.0.1:{port}/hook"), actor="test")
    store_alerts(store, [make_alert(i) for i in range(4)])
    sent = Sent()

    async def first_worker() -> None:
        d = deliverer(store, sent, max_attempts=5)
        await d.run_once()
        await until(lambda: all(r.attempts == 1 for r in Outbox(store).list(
            book.list()[0].id) if r.channel == "webhook"))
        await d.close()

    asyncio.run(first_worker())
    restarted = IncidentStore(store.url)
    with recording_server(port) as (_, received):
        async def second_worker() -> None:
            d = deliverer(restarted, sent, max_attempts=5)
            while len(received) < 4:
                await d.run_once()
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert await d.run_once() == 0
            await d.close()

        asyncio.run(second_worker())
    restarted.close()
    assert len(received) == 4 and not sent.dead
    rows = Outbox(store).list(book.list()[0].id)
    assert {(r.channel, r.status) for r in rows} == {("topic", "delivered"),
                                                    ("webhook", "delivered")}


def test_a_worker_holds_no_more_webhooks_than_it_can_send_within_its_lease(
        store: IncidentStore, silent_server: str) -> None:
    """A hanging endpoint: each worker holds at most lease / 2 / timeout of its
    deliveries and claims none more while busy, so nothing it holds outlives its lease
    and a second worker never claims (and POSTs) the same delivery."""
    book = SubscriptionBook(store)
    book.create(SubscriptionIn(team="air", domains=["environment"],
                               webhook_url=silent_server), actor="test")
    store_alerts(store, [make_alert(i) for i in range(30)])

    async def run() -> tuple[set[int], set[int], int]:
        first = deliverer(store, Sent(), timeout=1.0, lease_seconds=20.0)
        second = deliverer(store, Sent(), timeout=1.0, lease_seconds=20.0)
        await first.run_once()
        held_first = set(first._in_flight)
        again = await first.run_once()  # busy: nothing more for this subscription
        await second.run_once()
        held_second = set(second._in_flight)
        await first.close()
        await second.close()
        return held_first, held_second, again

    held_first, held_second, again = asyncio.run(run())
    assert len(held_first) == 10 and len(held_second) == 10  # 20 s / 2 / 1 s
    assert again == 0 and not held_first & held_second


class _Redirector(BaseHTTPRequestHandler):
    target = ""

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(307)
        self.send_header("Location", self.target)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data",
                                    "https://10.0.0.7/hook", "https://localhost:1/x"])
def test_a_redirect_to_a_refused_destination_fails_at_once(store: IncidentStore,
                                                          target: str) -> None:
    """An allowed endpoint answering 307 towards cloud metadata, a private address or
    localhost: not followed, one attempt, dead-lettered with the reason."""
    handler = type("Redirector", (_Redirector,), {"target": target})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    book = SubscriptionBook(store)
    sub = book.create(SubscriptionIn(team="air", domains=["environment"],
                                     webhook_url=f"http://127.0.0.1:{server.server_address[1]}/h"),
                      actor="test")
    store_alerts(store, [make_alert(1)])
    sent = Sent()

    async def run() -> None:
        d = deliverer(store, sent, max_attempts=5)
        while not sent.dead:
            await d.run_once()
            await asyncio.sleep(0.05)
        await d.close()

    asyncio.run(run())
    server.shutdown()
    server.server_close()
    [(_, reason)] = sent.dead
    assert reason.startswith("webhook failed after 1 attempt(s)") and "refused" in reason
    [row] = Outbox(store).list(sub.id, "failed")
    assert row.attempts == 1


def test_a_host_name_resolving_to_a_refused_address_is_not_connected_to() -> None:
    from citywatch.streams.webhook_policy import GuardedResolver, RefusedDestination

    async def run() -> None:
        resolver = GuardedResolver(WebhookPolicy())
        with pytest.raises(RefusedDestination, match="loopback"):
            await resolver.resolve("localhost", 443)
        allowed = GuardedResolver(WebhookPolicy(["localhost"]))
        assert await allowed.resolve("localhost", 443)
        await resolver.close()
        await allowed.close()

    asyncio.run(run())
