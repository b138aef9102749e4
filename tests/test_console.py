"""The operations console in Debian's headless Chromium (Playwright), on the demo store,
with a real API server and a real pipeline: sign-in per role, map and list against the
API, filters, an acknowledgement in the audit trail, a live alert without reload, and the
API docs, with every request leaving localhost refused and asserted absent."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from backends import ON_POSTGRESQL

from citywatch.connectors.file import FileSource, load_feed
from citywatch.connectors.kafka_sink import KafkaSink
from citywatch.ops.demo import demo_feeds
from citywatch.ops.settings import DEMO_DIR, Settings
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.tokens import TokenBook
from citywatch.ops.worker_process import WorkerProcess
from citywatch.rules.backtest import run_rules
from citywatch.rules.loader import load_ruleset
from citywatch.streams.broker import free_port
from citywatch.streams.envelope import Envelope, make_envelope
from citywatch.streams.kafka_admin import KafkaAdmin

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
OPEN = ("new", "acknowledged", "reopened")
BROWSER = os.environ.get("CITYWATCH_BROWSER", "/usr/bin/chromium")


@pytest.fixture
def console(settings: Settings, tmp_path: Path) -> Iterator[dict]:
    """The demo store (the demo rules over the demo feeds), a viewer and an operator
    token, ``citywatch serve`` and a worker on the test broker."""
    if not Path(BROWSER).exists():
        if "CITYWATCH_BROWSER" in os.environ:  # CI installs it: missing is a failure
            raise AssertionError(f"no browser at {BROWSER}")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    store = IncidentStore(settings.database_url)
    store.create_schema()
    events = [e for feed in demo_feeds() for e in FileSource(load_feed(feed)).run()
              if isinstance(e, Envelope)]
    store.add_alerts(run_rules(load_ruleset(DEMO_DIR / "rules.yaml"), events))
    book = TokenBook(store)
    tokens = {"viewer": book.issue("vera", "viewer"), "operator": book.issue("otto", "operator")}
    store.close()
    port = free_port()
    env = {**os.environ, **settings.to_env(), "CITYWATCH_DATA_DIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-m", "citywatch.ops.cli", "serve",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=(tmp_path / "serve.log").open("wb"))
    assert settings.kafka_bootstrap is not None
    with KafkaAdmin(settings.kafka_bootstrap) as admin:
        admin.ensure_topics(settings.topics.all, settings.topic_partitions)
    worker = WorkerProcess(settings, settings.kafka_bootstrap, tmp_path / "worker.log").start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    while "ready: consuming" not in (tmp_path / "worker.log").read_text(errors="replace"):
        assert time.monotonic() < deadline and worker.alive(), "worker not ready"
        time.sleep(0.2)
    try:
        yield {"url": url, "tokens": tokens, "settings": settings}
    finally:
        worker.stop()
        server.terminate()
        server.wait(20)


def _api_total(url: str, token: str, **params: object) -> int:
    response = httpx.get(f"{url}/incidents", params={"limit": 1, **params},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    response.raise_for_status()
    return response.json()["total"]


@ON_POSTGRESQL
def test_console_in_headless_chromium(console: dict) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, tokens = console["url"], console["tokens"]
    refused: list[str] = []

    def local_only(route) -> None:  # noqa: ANN001 - Playwright's Route
        host = urlsplit(route.request.url).hostname
        if route.request.url.startswith("data:") or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=BROWSER,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking"])
        try:
            def signed_in(role: str, width: int = 1280, height: int = 800):  # noqa: ANN202
                context = browser.new_context(viewport={"width": width, "height": height})
                context.route("**/*", local_only)
                page = context.new_page()
                page.goto(url + "/")
                page.get_by_label("API token").fill(tokens[role])
                page.get_by_role("button", name="Sign in").click()
                expect(page.locator("#who")).to_contain_text(f"({role})")
                expect(page.locator("#list tbody tr").first).to_be_visible()
                return page

            # the viewer: every open incident on the map, no actions offered
            viewer = signed_in("viewer")
            open_total = _api_total(url, tokens["viewer"], status=list(OPEN))
            expect(viewer.locator("#map")).to_have_attribute("data-incidents",
                                                             str(open_total))
            expect(viewer.locator("#open-count")).to_have_text(str(open_total))
            viewer.locator("#list tbody tr").first.click()
            expect(viewer.locator("#detail h2")).to_be_visible()
            assert viewer.get_by_role("button", name="Acknowledge").count() == 0
            assert viewer.get_by_role("button", name="Resolve").count() == 0
            viewer.screenshot(path=str(ARTIFACTS / "console-viewer-detail.png"))

            # filters: a zone and a minimum severity, as the API counts them
            viewer.get_by_role("button", name="Close").click()
            viewer.get_by_label("Zone").fill("Bronx")
            viewer.get_by_label("Zone").press("Tab")
            viewer.get_by_label("Severity at least").select_option("Moderate")
            bronx = _api_total(url, tokens["viewer"], status=list(OPEN), zone="Bronx",
                               min_severity="Moderate")
            assert bronx > 0
            expect(viewer.locator("#map")).to_have_attribute("data-incidents", str(bronx))
            expect(viewer.locator("#count")).to_contain_text(f"{bronx} incident(s) shown")

            # the operator acknowledges one; the audit trail and the API say so
            operator = signed_in("operator", 1920, 1080)
            expect(operator.locator("#map")).to_have_attribute("data-incidents",
                                                               str(open_total))
            operator.screenshot(path=str(ARTIFACTS / "console.png"))
            first = operator.locator("#list tbody tr").first
            incident_id = first.get_attribute("data-id")
            first.click()
            operator.get_by_role("button", name="Acknowledge").click()
            expect(operator.locator("#detail .audit li[data-action=acknowledge]")
                   ).to_contain_text("otto")
            detail = httpx.get(f"{url}/incidents/{incident_id}", timeout=10, headers={
                "Authorization": f"Bearer {tokens['viewer']}"}).json()
            assert detail["incident"]["status"] == "acknowledged"
            operator.get_by_role("button", name="Close").click()

            # live: an alert produced into the running pipeline, on map and list, no reload
            expect(operator.locator("#live")).to_have_text("live")
            settings: Settings = console["settings"]
            quake = make_envelope(
                source="usgs-earthquakes", source_record_id="console-test-1",
                domain="disaster", kind="earthquake.reported",
                time=datetime.now(UTC).replace(microsecond=0), entity_id="console-test-1",
                geometry={"type": "Point", "coordinates": [-122.42, 37.77]},
                attributes={"mag": 6.2, "place": "console test quake", "tsunami": 0})
            before = int(operator.locator("#map").get_attribute("data-incidents"))
            started = time.monotonic()
            with KafkaSink(settings.kafka_bootstrap, settings.topics) as sink:
                sink.send(quake)
                sink.flush()
            expect(operator.locator("#map")).to_have_attribute(
                "data-incidents", str(before + 1), timeout=5_000)
            expect(operator.locator("#list tbody")).to_contain_text("Earthquake")
            seen_after = time.monotonic() - started
            assert seen_after < 5.0

            # the API reference, with nothing allowed to load from elsewhere
            docs = viewer.context.new_page()
            docs.goto(url + "/docs")
            expect(docs.locator(".swagger-ui .info .title")).to_contain_text("citywatch")
            docs.goto(url + "/redoc")
            expect(docs.locator(".swagger-ui .info .title")).to_contain_text("citywatch")
        finally:
            browser.close()
    assert refused == []
    assert (ARTIFACTS / "console.png").stat().st_size > 20_000
