"""The responder API under abuse: limits before parsing, XML-safe text, safe webhooks,
throttled authentication, 503 during a store outage, security headers.

Limits, throttling and the outage run against a real ``citywatch serve`` process (its
memory is measured from ``/proc``; PostgreSQL sits behind a TCP fault proxy); the rest
against the application in-process, on SQLite and PostgreSQL."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest
from factories import make_alert
from fault_proxy import FaultProxy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from citywatch.ops.api.atom import ATOM_NS, atom_feed
from citywatch.ops.cap import CAP_NS, CapWriter
from citywatch.ops.settings import Settings
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.tokens import TokenBook
from citywatch.streams.broker import free_port
from citywatch.streams.subscriptions import MAX_ZONES

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

    from citywatch.ops.api.app import create_api

PG_URL = os.environ.get("CITYWATCH_TEST_DATABASE_URL")
MB = 1_000_000


# ---------------------------------------------------------------- a real server


class Served:
    """A ``citywatch serve`` process, its base URL, an operator token and its log."""

    def __init__(self, process: subprocess.Popen[bytes], base: str, token: str,
                 log: Path) -> None:
        self.process, self.base, self.token, self.log = process, base, token, log

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def peak_rss(self) -> int:
        """The process's peak resident memory (VmHWM), in bytes."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kb = next(line.split()[1] for line in status.splitlines()
                  if line.startswith("VmHWM:"))
        return int(kb) * 1024


def _serve(database_url: str, store_url: str, tmp_path: Path,
           **env: str) -> Iterator[Served]:
    store = IncidentStore(store_url)
    store.create_schema()
    store.add_alerts([make_alert(1)])
    token = TokenBook(store).issue("desk", "operator")
    store.close()
    port = free_port()
    log = tmp_path / "serve.log"
    environment = {**os.environ, "CITYWATCH_DATABASE_URL": database_url,
                   "CITYWATCH_API_PORT": str(port), "CITYWATCH_DATA_DIR": str(tmp_path),
                   **env}
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "citywatch.ops.cli", "serve"],
                                   env=environment, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the API never came up"
        time.sleep(0.2)
    try:
        yield Served(process, base, token, log)
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    url = f"sqlite:///{tmp_path / 'incidents.db'}"
    yield from _serve(url, url, tmp_path)


def _refused_quickly(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "detail" in response.json()


def test_a_100_mb_body_without_a_token_is_refused_unread(served: Served) -> None:
    url = served.base + "/incidents/x/notes"
    httpx.get(served.base + "/health")
    before = served.peak_rss()
    body = b'{"text": "' + b"x" * (100 * MB) + b'"}'
    with_length = httpx.post(url, content=body, timeout=60,
                             headers={"Content-Type": "application/json"})
    _refused_quickly(with_length, 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for start in range(0, len(body), MB):
            yield body[start:start + MB]

    chunked = httpx.post(url, content=chunks(), timeout=60,
                         headers={"Content-Type": "application/json"})
    _refused_quickly(chunked, 413)
    growth = served.peak_rss() - before
    assert growth < 50 * MB, f"server peak memory grew by {growth / MB:.1f} MB"
    print(f"100 MB bodies refused; server peak memory grew {growth / MB:.1f} MB")
    assert httpx.get(served.base + "/incidents", headers=served.auth).status_code == 200


def _get(served: Served, path: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    """A GET by the standard library's client (httpx refuses URLs this long)."""
    connection = http.client.HTTPConnection(served.base.removeprefix("http://"), timeout=30)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, \
            response.read()
    finally:
        connection.close()


def test_a_2_mb_query_string_gets_414_and_a_1_mb_header_431(served: Served) -> None:
    before = served.peak_rss()
    status, headers, body = _get(served, "/incidents?zone=" + "x" * (2 * MB), served.auth)
    assert status == 414 and headers["x-content-type-options"] == "nosniff", body
    status, headers, body = _get(served, "/incidents", {**served.auth, "X-Big": "y" * MB})
    assert status == 431 and b"larger than" in body
    assert served.peak_rss() - before < 50 * MB
    assert httpx.get(served.base + "/incidents", headers=served.auth).status_code == 200


def test_wrong_tokens_are_throttled_and_logged_without_the_secret(served: Served) -> None:
    statuses = []
    secret = "not-a-real-token-0123456789abcdef"
    started = time.monotonic()
    with httpx.Client(base_url=served.base) as client:
        for n in range(50):
            statuses.append(client.get("/incidents", headers={
                "Authorization": f"Bearer {secret}{n}"}).status_code)
        elapsed = time.monotonic() - started
        blocked = client.get("/incidents", headers=served.auth)
    assert statuses.count(401) == Settings().api_auth_failures_per_minute
    assert statuses.count(429) == 50 - statuses.count(401), statuses
    assert blocked.status_code == 429 and 1 <= int(blocked.headers["Retry-After"]) <= 60
    log = served.log.read_text()
    assert log.count("authentication failed from 127.0.0.1") == statuses.count(401)
    assert "token starting 'not-'" in log and secret not in log
    print(f"50 wrong tokens in {elapsed:.2f} s")


def test_a_token_in_use_records_when(served: Served) -> None:
    store = IncidentStore(f"sqlite:///{served.log.parent / 'incidents.db'}")
    assert httpx.get(served.base + "/incidents", headers=served.auth).status_code == 200
    assert TokenBook(store).last_used("desk") is not None


@pytest.mark.skipif(not PG_URL, reason="CITYWATCH_TEST_DATABASE_URL not set")
def test_postgresql_cut_gives_503_then_200_without_a_restart(tmp_path: Path, broker: str,
                                                            ) -> None:
    from conftest import _reset_postgres
    from sqlalchemy.engine import make_url

    _reset_postgres(PG_URL)
    target = make_url(PG_URL)
    with FaultProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        through = target.set(host="127.0.0.1", port=proxy.port).render_as_string(False)
        for served in _serve(through, PG_URL, tmp_path, CITYWATCH_KAFKA_BOOTSTRAP=broker):
            assert httpx.get(served.base + "/incidents", headers=served.auth
                             ).status_code == 200
            proxy.cut()
            for path in ("/incidents", "/subscriptions", "/feeds/air.atom"):
                down = httpx.get(served.base + path, headers=served.auth, timeout=30)
                assert down.status_code == 503, (path, down.text)
                assert int(down.headers["Retry-After"]) > 0
            health = httpx.get(served.base + "/health", timeout=30)
            assert health.status_code == 503
            assert health.json()["store"].startswith("unavailable")
            assert health.json()["broker"] == "ok"
            proxy.restore()
            deadline = time.monotonic() + 30
            while httpx.get(served.base + "/incidents", headers=served.auth,
                            timeout=30).status_code != 200:
                assert time.monotonic() < deadline, "the API never recovered"
                time.sleep(0.5)
            assert httpx.get(served.base + "/health").json() == {
                "status": "ok", "store": "ok", "broker": "ok"}
            assert "incident store unavailable" in served.log.read_text()
            assert "Traceback" not in served.log.read_text()


# ---------------------------------------------------------------- in process


ODD = "M 4.6 - 12 km of Bay\u000b\u0001 Area \x7f\ufffe\x1b[31m"


def test_control_characters_in_event_text_give_valid_cap_and_atom(
        api, store: IncidentStore) -> None:
    client, h = api
    alert = msgspec.structs.replace(make_alert(7, zone="Staten Island"), message=ODD,
                                    event=ODD[:40], entity_id="quake\x01")
    store.add_alerts([alert])
    client.post("/subscriptions", headers=h["operator"],
                json={"team": "quakes", "zones": ["Staten Island"]})
    writer = CapWriter("citywatch@city.example")
    one = client.get(f"/alerts/{alert.id}/cap", headers=h["viewer"])
    assert one.status_code == 200
    writer.validate(one.content)
    description = etree.fromstring(one.content).find(f".//{{{CAP_NS}}}description").text
    assert description == "M 4.6 - 12 km of Bay\ufffd\ufffd Area \x7f\ufffd\ufffd[31m"
    incident_id = client.get(f"/alerts/{alert.id}", headers=h["viewer"]).json()["incident_id"]
    whole = client.get(f"/incidents/{incident_id}/cap", headers=h["viewer"])
    assert whole.status_code == 200
    writer.validate(whole.content)
    feed = client.get("/feeds/quakes.atom", headers=h["viewer"])
    assert feed.status_code == 200
    entries = etree.fromstring(feed.content).findall(f"{{{ATOM_NS}}}entry")
    assert len(entries) == 1
    writer.validate(etree.tostring(entries[0].find(f"{{{ATOM_NS}}}content")[0]))


ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=ANY_TEXT, event=ANY_TEXT, place=ANY_TEXT, entity=ANY_TEXT)
def test_any_unicode_gives_valid_cap_and_atom(message: str, event: str, place: str,
                                              entity: str) -> None:
    """Any text, lone surrogates and every control character included, in every field an
    alert carries into XML: the CAP messages validate against the schema and the Atom
    feed parses."""
    writer = CapWriter("citywatch@city.example")
    alert = msgspec.structs.replace(make_alert(1), message=message, event=event,
                                    zone_name=place, entity_id=entity or "e")
    writer.validate(writer.alert(alert))
    incident = type("Incident", (), {"id": "i-1", "status": "open", "revision": 1,
                                     "updated_at": alert.raised_at, "title": message,
                                     "alert_count": 1})()
    writer.validate(writer.incident(incident, [alert]))
    feed = etree.fromstring(atom_feed(place.strip() or "team", [alert], writer.alert,
                                      base_url="http://x"))
    assert len(feed.findall(f"{{{ATOM_NS}}}entry")) == 1


def test_lone_surrogates_and_nul_in_json_bodies_are_422(api) -> None:
    client, h = api
    incident = client.get("/incidents", headers=h["viewer"])
    assert incident.status_code == 200
    for body in (b'{"text": "crew \\ud800 on site"}', b'{"text": "a\\u0000b"}'):
        response = client.post("/subscriptions", headers={
            **h["operator"], "Content-Type": "application/json"},
            content=b'{"team": "air", "zones": [' + body[9:-1] + b"]}")
        assert response.status_code == 422, response.text
        assert "not allowed" in response.text


def test_a_subscription_with_200k_zones_is_422(api) -> None:
    client, h = api
    body = {"team": "air", "zones": ["a"] * 200_000}
    response = client.post("/subscriptions", json=body, headers=h["operator"])
    assert response.status_code == 422
    assert "1000" in response.text and len(response.request.content) < MB
    ok = client.post("/subscriptions", json={"team": "air", "zones": ["Bronx"] * MAX_ZONES},
                     headers=h["operator"])
    assert ok.status_code == 201


@pytest.mark.parametrize(("url", "status", "why"), [
    ("http://169.254.169.254/latest/meta-data/", 422, "link-local"),
    ("https://169.254.169.254/", 422, "link-local"),
    ("http://[::ffff:169.254.169.254]/", 422, "link-local"),
    ("https://10.1.2.3/hook", 422, "private"),
    ("https://127.0.0.2:5432/", 422, "loopback"),
    ("https://localhost/hook", 422, "loopback"),
    ("http://hooks.example.org/hook", 422, "https"),
    ("https://hooks.example.org/hook", 201, None),
    ("http://127.0.0.1:9/hook", 201, None),  # on the test allow-list
])
@pytest.mark.parametrize("field", ["webhook_url", "ngsi_ld_url"])
def test_webhook_destinations(api, url: str, status: int, why: str | None,
                              field: str) -> None:
    """Webhooks and NGSI-LD context brokers are checked alike."""
    client, h = api
    response = client.post("/subscriptions", headers=h["operator"],
                           json={"team": "air", field: url})
    assert response.status_code == status, response.text
    if why:
        assert why in str(response.json()["detail"])


def test_security_headers_cors_off_and_self_hosted_docs(api, store: IncidentStore,
                                                       tmp_path: Path) -> None:
    client, h = api
    response = client.get("/incidents", headers={**h["viewer"], "Origin": "http://evil"})
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "access-control-allow-origin" not in response.headers
    docs = client.get("/docs")
    assert docs.status_code == 200 and "<script>" not in docs.text
    assert "http" not in docs.text.replace("http-equiv", "")  # nothing from elsewhere
    assert client.get("/static/swagger_ui/swagger-ui-bundle.js").status_code == 200
    with TestClient(create_api(Settings(database_url=store.url, data_dir=tmp_path,
                                        api_cors_origins="https://desk.city.example"),
                               store)) as other:
        allowed = other.get("/health", headers={"Origin": "https://desk.city.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://desk.city.example"


def test_openapi_documents_the_limits(api) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/incidents"]["get"]["responses"]
    assert {"413", "414", "431", "429", "503"} <= set(responses)
    zones = spec["components"]["schemas"]["SubscriptionIn"]["properties"]["zones"]
    assert zones["maxItems"] == MAX_ZONES

