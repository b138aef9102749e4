"""Token lifecycle through the real CLI and the API: list (never the secret), revoke
(refused from the next request), expiry, one valid token per name."""

from __future__ import annotations

import subprocess
import sys
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

from citywatch.ops.settings import Settings
from citywatch.ops.store.schema import ApiTokenRow
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.tokens import TokenBook

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

    from citywatch.ops.api.app import create_api


def cli(store: IncidentStore, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "tokens", *args],
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "CITYWATCH_DATABASE_URL": store.url})


def test_tokens_by_cli_and_api(store: IncidentStore, tmp_path: Path) -> None:
    added = cli(store, "add", "desk", "--role", "operator", "--expires", "90d")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip()
    again = cli(store, "add", "desk")
    assert again.returncode == 2 and "revoke it first" in again.stderr
    assert cli(store, "add", "x", "--expires", "soon").returncode == 2
    admin = TokenBook(store).issue("boss", "admin")
    client = TestClient(create_api(Settings(database_url=store.url, data_dir=tmp_path),
                                   store))
    desk = {"Authorization": f"Bearer {secret}"}
    assert client.get("/incidents", headers=desk).status_code == 200
    listed = cli(store, "list")
    assert listed.returncode == 0 and "desk" in listed.stdout and "valid" in listed.stdout
    assert secret not in listed.stdout and secret[:8] not in listed.stdout
    json_rows = cli(store, "list", "--json").stdout
    assert '"name": "desk"' in json_rows and '"last_used_at": "2' in json_rows

    revoked = cli(store, "revoke", "desk")
    assert revoked.returncode == 0, revoked.stderr
    assert client.get("/incidents", headers=desk).status_code == 401  # the next request
    assert cli(store, "revoke", "desk").returncode == 1
    assert cli(store, "add", "desk", "--role", "viewer").returncode == 0  # name free again

    boss = {"Authorization": f"Bearer {admin}"}
    issued = client.post("/tokens", json={"name": "feed-reader", "role": "viewer",
                                          "expires_in_days": 30}, headers=boss)
    assert issued.status_code == 201 and issued.json()["token"]
    reader = {"Authorization": f"Bearer {issued.json()['token']}"}
    assert client.get("/tokens", headers=reader).status_code == 403
    names = {row["name"]: row for row in client.get("/tokens", headers=boss).json()}
    assert names["desk"]["revoked_at"] is None and "token" not in names["desk"]
    assert client.post("/tokens", json={"name": "feed-reader", "role": "viewer"},
                       headers=boss).status_code == 409
    assert client.delete("/tokens/feed-reader", headers=boss).status_code == 204
    assert client.get("/incidents", headers=reader).status_code == 401
    assert client.delete("/tokens/feed-reader", headers=boss).status_code == 404

    expiring = TokenBook(store).issue("temp", "viewer",
                                      expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert client.get("/incidents", headers={"Authorization": f"Bearer {expiring}"}
                      ).status_code == 200
    with store.engine.begin() as conn:
        conn.execute(update(ApiTokenRow).where(ApiTokenRow.name == "temp")
                     .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert client.get("/incidents", headers={"Authorization": f"Bearer {expiring}"}
                      ).status_code == 401
