"""Alerts out to FIWARE: every demo alert as a Smart Data Models ``Alert`` (key-values
and NGSI-LD normalized) valid against the shipped schema, and the ``ngsi-ld`` channel of a
subscription upserting them to a context broker, retried after a 503, once each."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from factories import make_alert
from test_webhooks import Sent, deliverer, store_alerts, until

from citywatch.connectors.file import FileSource, load_feed
from citywatch.ops.demo import demo_feeds
from citywatch.ops.ngsi_alert import (
    alert_entity,
    key_values,
    normalized,
    validate_alert_entity,
)
from citywatch.ops.settings import DEMO_DIR
from citywatch.ops.store.outbox import Outbox
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.subscriptions import SubscriptionBook
from citywatch.rules.backtest import run_rules
from citywatch.rules.loader import load_ruleset
from citywatch.streams.envelope import Envelope
from citywatch.streams.subscriptions import SubscriptionIn


def test_every_demo_alert_is_a_valid_fiware_alert_in_both_forms() -> None:
    events = [e for feed in demo_feeds() for e in FileSource(load_feed(feed)).run()
              if isinstance(e, Envelope)]
    alerts = run_rules(load_ruleset(DEMO_DIR / "rules.yaml"), events)
    assert len({a.id for a in alerts}) > 100
    categories = set()
    for alert in alerts:
        entity = alert_entity(alert)
        validate_alert_entity(entity)
        form = normalized(entity)
        assert form["@context"] and form["location"]["type"] == "GeoProperty"
        assert key_values(form) == entity
        validate_alert_entity(key_values(form))
        categories.add(entity["category"])
    assert categories == {"traffic", "environment", "health", "naturalDisaster"}


class _Broker(BaseHTTPRequestHandler):
    """A context broker stand-in: refuses the first upsert with 503, then checks every
    body as Orion-LD would (JSON-LD, a list of normalized Alert entities the schema
    accepts) and answers 204, or 400 with the reason."""

    calls: list[int] = []
    entities: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append(len(body))
        if len(type(self).calls) == 1:
            self.send_response(503)
            self.end_headers()
            return
        problem = None
        if self.path != "/ngsi-ld/v1/entityOperations/upsert":
            problem = f"path {self.path}"
        elif self.headers["Content-Type"] != "application/ld+json":
            problem = f"content type {self.headers['Content-Type']}"
        else:
            try:
                for entity in json.loads(body):
                    assert "@context" in entity
                    validate_alert_entity(key_values(entity))
                    type(self).entities.append(entity)
            except (ValueError, AssertionError) as exc:
                problem = str(exc)
        self.send_response(400 if problem else 204)
        self.end_headers()
        if problem:
            self.wfile.write(problem.encode())

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def context_broker() -> Iterator[tuple[str, type[_Broker]]]:
    handler = type("Broker", (_Broker,), {"calls": [], "entities": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", handler
    server.shutdown()
    server.server_close()


def test_the_ngsi_ld_channel_upserts_each_alert_once_after_a_503(
        store: IncidentStore) -> None:
    alerts = [make_alert(i) for i in range(4)]
    with context_broker() as (url, broker):
        book = SubscriptionBook(store)
        book.create(SubscriptionIn(team="air", domains=["environment"], ngsi_ld_url=url),
                    actor="test")
        assert len(store_alerts(store, alerts)) == 4
        sent = Sent()

        async def run() -> None:
            d = deliverer(store, sent, max_attempts=4)
            deadline = asyncio.get_running_loop().time() + 30
            while len(broker.entities) < 4:
                assert asyncio.get_running_loop().time() < deadline, (sent.dead, broker.calls)
                await d.run_once()
                await asyncio.sleep(0.05)
            await until(lambda: all(r.status == "delivered" for r in Outbox(store).list(
                book.list()[0].id)))
            assert store_alerts(store, alerts) == set()  # a replay owes nothing again
            assert await d.run_once() == 0
            await d.close()

        asyncio.run(run())
    assert not sent.dead
    assert sorted(e["id"] for e in broker.entities) == sorted(
        f"urn:ngsi-ld:Alert:citywatch:{a.id}" for a in alerts)
    assert len(broker.calls) == 5  # the refused one, then each alert once
    rows = Outbox(store).list(book.list()[0].id)
    ngsi = [r for r in rows if r.channel == "ngsi-ld"]
    assert len(ngsi) == 4 and sorted(r.attempts for r in ngsi)[-1] >= 1
