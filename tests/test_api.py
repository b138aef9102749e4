"""The responder API on SQLite and PostgreSQL: filters, lifecycle, lineage, CAP, Atom,
subscriptions, SSE, authentication and roles, and schemathesis against its OpenAPI."""

from __future__ import annotations

import json
import os
import warnings

import pytest
from factories import make_alert
from hypothesis import HealthCheck, given, settings
from lxml import etree
from sqlalchemy import select

from citywatch.ops.cap import CAP_NS, CapWriter
from citywatch.ops.store.schema import IncidentRow
from citywatch.ops.store.store import IncidentStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient



def _first(client: TestClient, headers: dict, **params: str) -> dict:
    return client.get("/incidents", params=params, headers=headers).json()["items"][0]


def test_list_filters_and_pagination(api) -> None:
    client, h = api
    viewer = h["viewer"]
    page = client.get("/incidents", headers=viewer).json()
    assert page["total"] == 3  # Bronx (2 alerts), Queens, traffic entity
    assert client.get("/incidents", params={"zone": "Bronx"}, headers=viewer
                      ).json()["items"][0]["alert_count"] == 2
    assert client.get("/incidents", params={"min_severity": "Severe"}, headers=viewer
                      ).json()["total"] == 1
    assert client.get("/incidents", params={"domain": "traffic"}, headers=viewer
                      ).json()["total"] == 1
    nyc = client.get("/incidents", params={"bbox": "-74.3,40.4,-73.6,41"}, headers=viewer)
    assert nyc.json()["total"] == 2
    two = client.get("/incidents", params={"limit": 2, "offset": 2}, headers=viewer).json()
    assert len(two["items"]) == 1 and two["total"] == 3
    assert client.get("/incidents", params={"bbox": "1,2"}, headers=viewer).status_code == 422
    assert client.get("/incidents", params={"since": "2022-01-01T00:00:00"},
                      headers=viewer).status_code == 422  # naive times are refused


def test_filters_are_validated_with_one_error_format(api) -> None:
    client, h = api
    viewer = h["viewer"]

    def refused(**params: str) -> list[dict]:
        response = client.get("/incidents", params=params, headers=viewer)
        assert response.status_code == 422, (params, response.text)
        detail = response.json()["detail"]
        assert isinstance(detail, list) and {"type", "loc", "msg"} <= set(detail[0])
        return detail

    assert "min_severity" in refused(severity="Severe")[0]["msg"]  # unknown parameter
    assert "'Severe'" in refused(min_severity="Bad")[0]["msg"]  # the allowed values
    assert "'environment'" in refused(domain="air")[0]["msg"]
    assert "'acknowledged'" in refused(status="open")[0]["msg"]
    assert refused(bbox="1,2")[0]["loc"] == ["query", "bbox"]
    lower = client.get("/incidents", params={"zone": "bronx"}, headers=viewer).json()
    assert lower["total"] == 1 and lower["items"][0]["zone_name"] == "Bronx"
    nul = client.get("/incidents", params={"zone": "a\x00"}, headers=viewer)
    assert nul.status_code == 422 and isinstance(nul.json()["detail"], list)


def test_lifecycle_with_audit_and_lineage(api) -> None:
    client, h = api
    op = h["operator"]
    incident = _first(client, op, zone="Bronx")
    url = f"/incidents/{incident['id']}"
    assert client.post(url + "/acknowledge", headers=op).json()["status"] == "acknowledged"
    assert client.post(url + "/acknowledge", headers=op).status_code == 409
    assert client.post(url + "/assign", json={"assignee": "ana", "team": "air"},
                       headers=op).json()["assignee"] == "ana"
    assert client.post(url + "/notes", json={"text": "crew on site"}, headers=op
                       ).status_code == 200
    assert client.post(url + "/resolve", headers=op).json()["status"] == "resolved"
    assert client.post(url + "/reopen", headers=op).json()["status"] == "reopened"
    detail = client.get(url, headers=h["viewer"]).json()
    assert [a["action"] for a in detail["audit"]] == ["alerts_added", "acknowledge",
                                                      "assign", "note", "resolve", "reopen"]
    assert [a["actor"] for a in detail["audit"]] == ["pipeline"] + ["operator-user"] * 5
    assert detail["notes"][0]["text"] == "crew on site"
    assert sorted(a["source_event_ids"][0] for a in detail["alerts"]) == ["ev-1", "ev-2"]
    lineage = next(a for a in detail["alerts"] if a["source_event_ids"] == ["ev-1"])
    assert lineage["rule_id"] == "pm25-high" and lineage["rule_version"] == "v1"
    assert client.post("/incidents/nope/resolve", headers=op).status_code == 404


def test_cap_exports_validate(api, store: IncidentStore) -> None:
    client, h = api
    writer = CapWriter("citywatch@city.example")
    incident = _first(client, h["viewer"], zone="Bronx")
    alert_id = client.get(f"/incidents/{incident['id']}", headers=h["viewer"]
                          ).json()["alerts"][0]["id"]
    cap = client.get(f"/alerts/{alert_id}/cap", headers=h["viewer"])
    assert cap.headers["content-type"].startswith("application/cap+xml")
    writer.validate(cap.content)
    root = etree.fromstring(cap.content)
    assert root.findtext(f"{{{CAP_NS}}}msgType") == "Alert"
    client.post(f"/incidents/{incident['id']}/resolve", headers=h["operator"])
    cancel = client.get(f"/incidents/{incident['id']}/cap", headers=h["viewer"]).content
    writer.validate(cancel)
    root = etree.fromstring(cancel)
    assert root.findtext(f"{{{CAP_NS}}}msgType") == "Cancel"
    assert alert_id in root.findtext(f"{{{CAP_NS}}}references")


def test_subscriptions_and_atom_feed(api) -> None:
    client, h = api
    body = {"team": "air", "domains": ["environment"], "zones": ["Bronx"],
            "min_severity": "Moderate", "webhook_url": "http://127.0.0.1:9/hook"}
    created = client.post("/subscriptions", json=body, headers=h["operator"])
    assert created.status_code == 201
    sid = created.json()["id"]
    assert client.get(f"/subscriptions/{sid}", headers=h["viewer"]).json()["team"] == "air"
    assert client.post("/subscriptions", json={**body, "team": "Bad Team"},
                       headers=h["operator"]).status_code == 422
    feed = client.get("/feeds/air.atom", headers=h["viewer"])
    assert feed.headers["content-type"].startswith("application/atom+xml")
    entries = etree.fromstring(feed.content).findall("{http://www.w3.org/2005/Atom}entry")
    assert len(entries) == 2  # the two Bronx alerts
    replaced = client.put(f"/subscriptions/{sid}", json={**body, "zones": ["Queens"]},
                          headers=h["operator"])
    assert replaced.json()["zones"] == ["Queens"]
    misspelt = client.post("/subscriptions", json={**body, "zones": ["Bronxx"]},
                           headers=h["operator"])
    assert misspelt.status_code == 422
    assert "unknown zone 'Bronxx' (did you mean 'Bronx'" in misspelt.json()["detail"][0]["msg"]
    lower = client.post("/subscriptions", json={**body, "team": "air2", "zones": ["bronx"]},
                        headers=h["operator"])
    assert lower.json()["zones"] == ["Bronx"]  # filed as the layer spells it
    assert client.get("/feeds/nobody.atom", headers=h["viewer"]).status_code == 404
    # a feed reader's secret URL: no token, revocable
    issued = client.post(f"/subscriptions/{sid}/feed-key", headers=h["operator"])
    assert issued.status_code == 201
    url = issued.json()["feed_url"]
    path = url.split("://", 1)[1].split("/", 1)[1]
    keyed = client.get("/" + path)
    assert keyed.status_code == 200
    assert len(etree.fromstring(keyed.content).findall(
        "{http://www.w3.org/2005/Atom}entry")) == 1  # Queens, without a token
    assert client.post(f"/subscriptions/{sid}/feed-key", headers=h["viewer"]
                       ).status_code == 403
    assert client.delete(f"/subscriptions/{sid}/feed-key", headers=h["operator"]
                         ).status_code == 204
    assert client.get("/" + path).status_code == 404
    assert client.delete(f"/subscriptions/{sid}", headers=h["operator"]).status_code == 204
    assert client.get(f"/subscriptions/{sid}", headers=h["viewer"]).status_code == 404


def test_stream_sends_changed_incidents(api, store: IncidentStore) -> None:
    client, h = api
    store.add_alerts([make_alert(9, zone="Brooklyn")])  # a change before the stream opens
    with client.stream("GET", "/stream", params={"close_after": 1.5},
                       headers={**h["viewer"], "Last-Event-ID": "0"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = [json.loads(line[len("data: "):]) for line in text.splitlines()
              if line.startswith("data: ")]
    assert {e["zone_name"] for e in events} >= {"Bronx", "Queens", "Brooklyn"}


def _read_changes(client: TestClient, headers: dict, after: str, stop_after: int | None,
                  ) -> list[tuple[int, str]]:
    """(change id, incident id) of the stream's events after ``after``, until it closes
    or ``stop_after`` events have arrived (then the client disconnects)."""
    got: list[tuple[int, str]] = []
    change = None
    with client.stream("GET", "/stream", params={"close_after": 1.5},
                       headers={**headers, "Last-Event-ID": after}) as response:
        for line in response.iter_lines():
            if line.startswith("id: "):
                change = int(line[4:])
            elif line.startswith("data: "):
                got.append((change, json.loads(line[6:])["id"]))
                if stop_after is not None and len(got) == stop_after:
                    break
    return got


def test_stream_resumes_after_the_last_change_seen_never_skipping_or_repeating(
        api, store: IncidentStore) -> None:
    """100 incidents created in one transaction (one timestamp) arrive once each, in
    order, across a reconnect with Last-Event-ID."""
    client, h = api
    from citywatch.ops.store.changes import last_change_id

    before = last_change_id(store)
    store.add_alerts([make_alert(100 + n, zone=f"Z{n:03d}")
                      for n in range(100)])
    first = _read_changes(client, h["viewer"], str(before), stop_after=40)
    rest = _read_changes(client, h["viewer"], str(first[-1][0]), stop_after=None)
    changes = first + rest
    assert len(changes) == 100
    assert [c for c, _ in changes] == sorted({c for c, _ in changes})  # in order, once
    with store.engine.connect() as conn:
        created = set(conn.execute(select(IncidentRow.id)
                                   .where(IncidentRow.zone_id.like("Z%"))).scalars())
    assert {i for _, i in changes} == created


RESPONDERS = ("viewer", "analyst")  # who may not act on incidents and subscriptions
MUTATING = [("post", "/incidents/{id}/acknowledge", None, RESPONDERS),
            ("post", "/incidents/{id}/resolve", None, RESPONDERS),
            ("post", "/incidents/{id}/reopen", None, RESPONDERS),
            ("post", "/incidents/{id}/assign", {"assignee": "x"}, RESPONDERS),
            ("post", "/incidents/{id}/notes", {"text": "x"}, RESPONDERS),
            ("post", "/subscriptions", {"team": "air"}, RESPONDERS),
            ("put", "/subscriptions/{id}", {"team": "air"}, RESPONDERS),
            ("delete", "/subscriptions/{id}", None, RESPONDERS),
            ("post", "/subscriptions/{id}/feed-key", None, RESPONDERS),
            ("delete", "/subscriptions/{id}/feed-key", None, RESPONDERS),
            ("post", "/rules/proposals", {"rules": "rules: []"}, ("viewer", "operator")),
            ("post", "/rules/versions/{version}/approve", None,
             ("viewer", "operator", "analyst")),
            ("post", "/rules/versions/{version}/reject", {"reason": "x"},
             ("viewer", "operator", "analyst")),
            ("post", "/rules/versions/{version}/rollback", None,
             ("viewer", "operator", "analyst")),
            ("post", "/tokens", {"name": "new-desk", "role": "viewer"},
             ("viewer", "operator", "analyst")),
            ("delete", "/tokens/{name}", None, ("viewer", "operator", "analyst"))]


@pytest.mark.parametrize(("method", "path", "body", "refused"), MUTATING)
def test_mutations_need_a_token_and_a_role(api, method: str, path: str, body,
                                           refused: tuple[str, ...]) -> None:
    client, h = api
    url = path.replace("{id}", _first(client, h["viewer"])["id"]).replace(
        "{version}", "abc123").replace("{name}", "nobody")
    kwargs = {"json": body} if body is not None else {}
    assert getattr(client, method)(url, **kwargs).status_code == 401
    assert getattr(client, method)(url, headers={"Authorization": "Bearer wrong"},
                                   **kwargs).status_code == 401
    for role in refused:
        assert getattr(client, method)(url, headers=h[role], **kwargs).status_code == 403
    assert getattr(client, method)(url, headers=h["admin"], **kwargs).status_code < 500


def test_every_route_is_in_the_mutation_table(api) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    mutating = {(m, p.replace("{incident_id}", "{id}").replace("{subscription_id}", "{id}"))
                for p, ops in spec["paths"].items() for m in ops if m in {"post", "put",
                                                                         "delete", "patch"}}
    assert mutating == {(m, p) for m, p, _, _ in MUTATING}


EXAMPLES = int(os.environ.get("CITYWATCH_SCHEMATHESIS_EXAMPLES", "15"))


def test_schemathesis_finds_no_server_errors(api) -> None:
    import schemathesis

    client, h = api
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    checked = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/stream":
            continue  # an endless stream; covered by test_stream_sends_changed_incidents

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def no_5xx(case) -> None:
            response = case.call(headers=h["admin"])
            assert response.status_code < 500, (case.method, case.formatted_path,
                                                response.text[:300])

        no_5xx()
        checked += 1
    assert checked >= 14


def test_incidents_as_a_gis_layer_and_exported_files(api, store: IncidentStore,
                                                     tmp_path) -> None:
    """``/incidents.geojson`` opens with GeoPandas, one feature per incident at its place,
    filters as ``/incidents``; ``incidents export`` writes GeoPackage, GeoJSON and CSV
    that reopen with the same rows."""
    import io
    import subprocess
    import sys

    import geopandas as gpd
    import pandas as pd

    client, h = api
    listed = client.get("/incidents", headers=h["viewer"]).json()["items"]
    response = client.get("/incidents.geojson", headers=h["viewer"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/geo+json")
    layer = gpd.read_file(io.BytesIO(response.content))
    assert len(layer) == len(listed) == int(response.headers["x-total-count"])
    by_id = {i["id"]: i for i in listed}
    for _, row in layer.iterrows():
        incident = by_id[row["id"]]
        assert (row["severity"], row["status"], row["zone_name"]) == (
            incident["severity"], incident["status"], incident["zone_name"])
        assert (row.geometry.x, row.geometry.y) == (incident["lon"], incident["lat"])
    traffic = client.get("/incidents.geojson", params={"domain": "traffic"},
                         headers=h["viewer"]).json()
    assert [f["properties"]["domain"] for f in traffic["features"]] == ["traffic"]
    assert client.get("/incidents.geojson").status_code == 401
    assert client.get("/incidents.geojson", params={"bbox": "1,2"},
                      headers=h["viewer"]).status_code == 422

    env = {**os.environ, "CITYWATCH_DATABASE_URL": store.url,
           "CITYWATCH_DATA_DIR": str(tmp_path)}
    for suffix in ("gpkg", "geojson", "csv"):
        out = tmp_path / f"incidents.{suffix}"
        done = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "incidents",
                               "export", "--out", str(out)], capture_output=True,
                              text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        assert f"wrote {len(listed)} incidents" in done.stdout
        back = pd.read_csv(out) if suffix == "csv" else gpd.read_file(out)
        assert sorted(back["id"]) == sorted(by_id)
        assert dict(zip(back["id"], back["severity"], strict=True)) == {
            i: v["severity"] for i, v in by_id.items()}
    wrong = subprocess.run([sys.executable, "-m", "citywatch.ops.cli", "incidents", "export",
                            "--out", str(tmp_path / "x.shp")], capture_output=True,
                           text=True, env=env, timeout=60)
    assert wrong.returncode == 2 and "--format" in wrong.stderr
