"""Shared fixtures: the real embedded broker, incident stores (SQLite always, PostgreSQL
when ``CITYWATCH_TEST_DATABASE_URL`` is set), and the shared real data folder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from citywatch.connectors.file import FileSource, load_feed
from citywatch.ops.settings import DEMO_DIR, Settings
from citywatch.ops.store.schema import Base
from citywatch.ops.store.store import IncidentStore, make_engine
from citywatch.streams.broker import EmbeddedBroker
from citywatch.streams.envelope import Envelope

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("CITYWATCH_SHARED_DATA", REPO.parent / "shared" / "data"))
PG_URL = os.environ.get("CITYWATCH_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of one embedded Tansu broker for the whole session."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running.bootstrap


def _reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        Base.metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty incident-store database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'incidents.db'}"
    if not PG_URL:
        pytest.skip("CITYWATCH_TEST_DATABASE_URL not set")
    _reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def store(database_url: str) -> Iterator[IncidentStore]:
    s = IncidentStore(database_url)
    s.create_schema()
    yield s
    s.close()


@pytest.fixture
def settings(broker: str, database_url: str, tmp_path: Path) -> Settings:
    """Settings isolated per test: own topic prefix, app id, store and state dir."""
    tag = uuid.uuid4().hex[:8]
    return Settings(kafka_bootstrap=broker, topic_prefix=f"t{tag}.", app_id=f"cw-{tag}",
                    database_url=database_url, data_dir=tmp_path / "state",
                    webhook_allow=["127.0.0.1"])


@pytest.fixture(scope="session")
def epa_year(shared_data: Path) -> list[Envelope]:
    """The whole 2022 EPA NYC-metro PM2.5 file, in event-time order (a live feed's order)."""
    feed = load_feed(DEMO_DIR / "feeds/epa_pm25_nyc.yaml")
    path = shared_data / "air_quality/epa_aqs_pm25_daily_nyc_metro_2022.csv"
    events = [e for e in FileSource(feed, path=path).run() if isinstance(e, Envelope)]
    return sorted(events, key=lambda e: e.time)


@pytest.fixture
def api(store: IncidentStore, tmp_path: Path) -> Iterator[tuple[Any, dict[str, dict]]]:
    """The responder API in-process over ``store`` holding four alerts (three incidents),
    and an ``Authorization`` header per role; 127.0.0.1 is on the webhook allow-list."""
    import warnings

    from factories import make_alert

    from citywatch.ops.store.tokens import ROLES, TokenBook

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

        from citywatch.ops.api.app import create_api
    store.add_alerts([make_alert(1, zone="Bronx", severity="Severe"),
                      make_alert(2, zone="Bronx"),
                      make_alert(3, zone="Queens", lon=-73.8, lat=40.7),
                      make_alert(4, zone=None, domain="traffic", category="Transport",
                                 rule="i94-heavy", lon=-93.17, lat=44.96)])
    book = TokenBook(store)
    headers = {role: {"Authorization": f"Bearer {book.issue(role + '-user', role)}"}
               for role in ROLES}
    app = create_api(Settings(database_url=store.url, data_dir=tmp_path,
                              webhook_allow=["127.0.0.1"]), store)
    with TestClient(app) as client:
        yield client, headers
