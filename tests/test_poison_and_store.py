"""Poison input never stops a stage; every alert fits; the store takes every field and
refuses rows alone; many processes may migrate one fresh database at once."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import msgspec
from aiokafka.structs import ConsumerRecord
from factories import make_alert
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from citywatch.ops.store.schema import AlertRow
from citywatch.ops.store.store import IncidentStore
from citywatch.streams.alert import decode_alert
from citywatch.streams.envelope import Envelope, encode_envelope, make_envelope
from citywatch.streams.ingest import frames_of, split_for_frames, split_records
from citywatch.streams.worker import TRUNCATED, fit_alert

NOW = datetime(2024, 6, 1, tzinfo=UTC)


def valid(n: int, **changes: object) -> bytes:
    fields = {"source": "test", "source_record_id": str(n), "domain": "environment",
              "kind": "air_quality.observed", "time": NOW - timedelta(hours=n),
              "entity_id": f"s{n}", "attributes": {"pm25": 10.0 + n},
              "geometry": {"type": "Point", "coordinates": [-73.9, 40.8]}}
    fields.update(changes)
    return encode_envelope(make_envelope(**fields))  # type: ignore[arg-type]


def with_geometry(geometry: object) -> bytes:
    body = json.loads(valid(99))
    body["geometry"] = geometry
    return json.dumps(body).encode()


DEEP = "[" * 10_000 + "]" * 10_000
POISON: dict[str, bytes] = {
    "empty": b"",
    "not json": b"hello",
    "invalid utf-8 raw": b"\xff\xfe\xfd",
    "invalid utf-8 in a string": valid(98).replace(b'"s98"', b'"s\xc3\x2898"'),
    "5 MB": b'{"id": "' + b"x" * 5_000_000 + b'"}',
    "10,000-deep nesting in geometry": valid(97).replace(
        b'"coordinates":[-73.9,40.8]', b'"coordinates":[-73.9,40.8],"x":' + DEEP.encode()),
    "10,000-deep nesting at the top": valid(96)[:-1] + b',"zz":' + DEEP.encode() + b"}",
    "NaN": valid(95).replace(b"10.0", b"NaN", 1).replace(b"105.0", b"NaN"),
    "Infinity": valid(94).replace(b'"pm25":104.0', b'"pm25":Infinity'),
    "wrong types": json.dumps({"id": 1, "domain": ["x"]}).encode(),
    "out-of-range coordinates": with_geometry({"type": "Point", "coordinates": [200, 95]}),
    "string coordinates": with_geometry({"type": "Polygon", "coordinates": "0 0, 1 1"}),
    "one-point line": with_geometry({"type": "LineString", "coordinates": [[1, 2]]}),
    "unclosed ring": with_geometry({"type": "Polygon",
                                   "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}),
    "self-intersecting ring": with_geometry(
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}),
    "100k vertices": with_geometry({"type": "LineString", "coordinates": [
        [i / 1000, 0] for i in range(100_000)]}),
    "empty multipolygon": with_geometry({"type": "MultiPolygon", "coordinates": []}),
    "unknown geometry type": with_geometry({"type": "Circle", "coordinates": [0, 0]}),
    "year 9999": valid(93, time=datetime(9999, 1, 1, tzinfo=UTC)),
    "year 2030": valid(92, time=datetime(2030, 1, 1, tzinfo=UTC)),
    "before the floor": valid(91, time=datetime(1900, 1, 1, tzinfo=UTC)),
}


def records(payloads: list[bytes]) -> list[ConsumerRecord]:
    return [ConsumerRecord(topic="raw.environment", partition=0, offset=i, timestamp=0,
                           timestamp_type=0, key=None, value=p, checksum=None,
                           serialized_key_size=0, serialized_value_size=len(p), headers=())
            for i, p in enumerate(payloads)]


def test_each_poison_payload_is_one_dead_letter_between_valid_events() -> None:
    payloads = []
    for n, bad in enumerate(POISON.values()):
        payloads += [valid(n), bad]
    good, letters = split_records(records(payloads), now=NOW)
    assert [e.entity_id for e, _ in good] == [f"s{n}" for n in range(len(POISON))]
    assert len(letters) == len(POISON)
    for letter, name in zip(letters, POISON, strict=True):
        assert letter.error and letter.locator.startswith("raw.environment/0@"), name
    by_name = dict(zip(POISON, letters, strict=True))
    assert by_name["year 2030"].field == "time"
    assert by_name["invalid utf-8 in a string"].error.startswith("not valid UTF-8")
    assert "nested too deeply" in by_name["10,000-deep nesting at the top"].error
    frames, unframed = frames_of(good)
    assert len(frames) == 1 and unframed == []


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_are_a_dead_letter_or_a_valid_event(raw: bytes) -> None:
    good, letters = split_records(records([raw]), now=NOW)
    assert len(good) + len(letters) == 1
    frames_of(good)


JSON = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)


@given(st.fixed_dictionaries({}, optional={
    "id": JSON, "source": JSON, "domain": st.sampled_from(["traffic", "x"]) | JSON,
    "kind": JSON, "time": st.just("2024-01-01T00:00:00Z") | JSON,
    "received_at": st.just("2024-01-01T00:00:00Z") | JSON, "entity_id": JSON,
    "geometry": JSON | st.fixed_dictionaries({"type": st.sampled_from(
        ["Point", "LineString", "Polygon", "MultiPolygon", "MultiPoint"]),
        "coordinates": JSON}), "attributes": JSON}))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_json_is_a_dead_letter_or_a_valid_event(body: dict) -> None:
    raw = json.dumps(body).encode("utf-8", "surrogatepass")
    good, letters = split_records(records([raw]), now=NOW)
    assert len(good) + len(letters) == 1
    frames, unframed = frames_of(good)
    assert len(frames) == len(good) and not unframed  # valid means frameable


def test_an_oversized_alert_is_cut_not_dropped() -> None:
    alert = make_alert(1)
    huge = msgspec.structs.replace(alert, message="m" * 2_000_000,
                                   attributes={"note": "n" * 2_000_000, "pm25": 40.0})
    payload = fit_alert(huge, 900_000)
    assert len(payload) <= 900_000
    back = decode_alert(payload)
    assert back.id == alert.id and back.message.endswith(TRUNCATED)
    assert back.attributes["pm25"] == 40.0
    assert fit_alert(alert, 900_000) == msgspec.json.encode(alert)  # small: untouched


def test_the_store_fits_every_field_an_envelope_can_carry(store: IncidentStore) -> None:
    long = msgspec.structs.replace(make_alert(1), kind="k" * 500, entity_id="e" * 5000,
                                   zone_name="z\x00" * 300, message="NUL \x00 inside")
    assert store.add_new_alerts([long, make_alert(2)]) == {long.id, make_alert(2).id}
    with store.engine.connect() as conn:
        row = conn.execute(select(AlertRow).where(AlertRow.id == long.id)).one()
    assert len(row.kind) == 64 and row.kind.endswith("…") and "\x00" not in row.message
    assert store.add_new_alerts([long]) == set()  # a replay inserts nothing


def test_eight_processes_migrate_one_fresh_database_at_once(database_url: str) -> None:
    code = ("import sys; from citywatch.ops.store.store import IncidentStore; "
            "IncidentStore(sys.argv[1]).create_schema()")
    procs = [subprocess.Popen([sys.executable, "-c", code, database_url],
                              stderr=subprocess.PIPE) for _ in range(8)]
    results = [(p.wait(timeout=120), p.stderr.read().decode()[-500:]) for p in procs]
    assert [rc for rc, _ in results] == [0] * 8, results
    store = IncidentStore(database_url)
    with store.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(AlertRow)) == 0
    store.close()


def test_valid_envelope_roundtrip_is_untouched() -> None:
    good, letters = split_records(records([valid(1)]), now=NOW)
    assert letters == [] and isinstance(good[0][0], Envelope)


# hand-made variants around what the fast path decides alone (written for this test)
EDGES = [valid(1), valid(2, geometry=None), valid(3, attributes={}),
         valid(4, attributes={"n": 7, "ok": True, "lane": "west", "x": None}),
         valid(5, geometry={"type": "Point", "coordinates": [-73.9, 40.8, 12.5]}),
         valid(6, geometry={"type": "Point", "coordinates": [-73.9, 40.8, 350.0]}),
         valid(7, geometry={"type": "Point", "coordinates": [180, -90]}),
         with_geometry({"type": "Point", "coordinates": [-73.9, 40.8], "bbox": [0, 0, 1, 1]}),
         with_geometry({"type": "Point", "coordinates": [-73.9, 90.0000001]}),
         with_geometry({"type": "Point", "coordinates": [True, 40]}),
         with_geometry({"type": "Point", "coordinates": [-73.9]}),
         with_geometry({"type": "Point", "coordinates": [-73, 40, 1, 2]}),
         with_geometry({"type": "Point", "coordinates": [-180.5, 40]}),
         with_geometry({"type": "Point"}),
         with_geometry({"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}),
         valid(8).replace(b'"pm25":18.0', b'"pm25":1e999'),
         valid(9).replace(b'"pm25":19.0', b'"pm25":-1e400'),
         valid(10).replace(b'"pm25":20.0', b'"pm25":123456789012345678901234567890'),
         valid(11, time=NOW + timedelta(days=1)),
         valid(12, time=NOW + timedelta(days=1, microseconds=1)),
         valid(13, time=datetime(1970, 1, 1, tzinfo=UTC)),
         valid(14, time=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
         *(v for k, v in POISON.items() if k not in ("5 MB", "100k vertices"))]


@given(st.lists(st.sampled_from(EDGES) | st.binary(max_size=50), max_size=30))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_fast_split_equals_the_exact_one(payloads: list[bytes]) -> None:
    """What ingest frames (decoded by msgspec alone where it can) equals what the exact,
    one-record-at-a-time path frames, dead letter for dead letter, in order."""
    exact_good, exact_bad = split_records(records(payloads), now=NOW)
    fast_good, fast_bad = split_for_frames(records(payloads), now=NOW)
    assert [r.offset for _, r in fast_good] == [r.offset for _, r in exact_good]
    assert [msgspec.structs.replace(d, time=NOW) for d in fast_bad] == [
        msgspec.structs.replace(d, time=NOW) for d in exact_bad]
    exact_frames, exact_unframed = frames_of(exact_good)
    fast_frames, fast_unframed = frames_of(fast_good)
    assert fast_unframed == exact_unframed == []
    assert fast_frames == exact_frames  # the same bytes
