"""Envelope validation and the declarative mapping: errors name the field and record."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from citywatch.connectors.mapping import FeedMapping
from citywatch.streams.batch import decode_batch, encode_batch, epoch_seconds
from citywatch.streams.envelope import (
    DOMAINS,
    EnvelopeError,
    decode_envelope,
    encode_envelope,
    make_envelope,
)

EPA = FeedMapping.model_validate({
    "name": "epa", "domain": "environment", "kind": "air_quality.observed",
    "record_id": ["Site ID", "Date"], "entity_id": "Site ID",
    "time": {"field": "Date", "format": "%m/%d/%Y", "timezone": "America/New_York"},
    "geometry": {"lon": "SITE_LONGITUDE", "lat": "SITE_LATITUDE"},
    "attributes": {"pm25": {"field": "Daily Mean PM2.5 Concentration", "type": "float"}}})
ROW = {"Site ID": "360050110", "Date": "01/05/2022", "SITE_LONGITUDE": "-73.902",
       "SITE_LATITUDE": "40.816", "Daily Mean PM2.5 Concentration": "12.3"}

attribute_values = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9),
                             st.floats(allow_nan=False, allow_infinity=False),
                             st.text(max_size=20))


@given(domain=st.sampled_from(DOMAINS), record=st.text(min_size=1, max_size=30),
       entity=st.text(min_size=1, max_size=30).filter(str.strip),
       lon=st.floats(-180, 180), lat=st.floats(-90, 90),
       when=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1),
                         timezones=st.just(UTC)),
       attrs=st.dictionaries(st.text(min_size=1, max_size=10), attribute_values, max_size=5))
def test_envelope_round_trips_json_and_batches(domain, record, entity, lon, lat, when,
                                               attrs) -> None:
    env = make_envelope(source="src", source_record_id=record, domain=domain, kind="k.x",
                        time=when, entity_id=entity, attributes=attrs,
                        geometry={"type": "Point", "coordinates": [lon, lat]})
    assert decode_envelope(encode_envelope(env)) == env
    assert decode_batch(encode_batch([env, env])) == [env, env]


def test_id_is_stable_across_replays() -> None:
    a = EPA.to_envelope(ROW, locator="f:2")
    b = EPA.to_envelope(dict(ROW), locator="f:9")
    assert a.id == b.id
    assert a.time == datetime(2022, 1, 5, 5, tzinfo=UTC)


@pytest.mark.parametrize(("field", "bad", "message"), [
    ("Daily Mean PM2.5 Concentration", "n/a", "not a valid float"),
    ("SITE_LATITUDE", "", "missing coordinates"),
    ("Date", "2022-13-45", "not a time"),
    ("Site ID", "", "empty"),
])
def test_mapping_errors_name_field_and_record(field: str, bad: str, message: str) -> None:
    with pytest.raises(EnvelopeError) as err:
        EPA.to_envelope({**ROW, field: bad}, locator="epa.csv:17")
    assert err.value.field == field
    assert err.value.locator == "epa.csv:17"
    assert message in str(err.value) and "epa.csv:17" in str(err.value)


@pytest.mark.parametrize(("patch", "field"), [
    ({"domain": "weather"}, "domain"),
    ({"time": "2022-01-01T00:00:00"}, "time"),
    ({"geometry": {"type": "Point", "coordinates": [200, 0]}}, "geometry.coordinates"),
    ({"entity_id": 5}, "entity_id"),
])
def test_decode_rejects_invalid_with_field(patch: dict, field: str) -> None:
    good = msgspec.json.decode(encode_envelope(EPA.to_envelope(ROW, locator="x")))
    with pytest.raises(EnvelopeError) as err:
        decode_envelope(msgspec.json.encode({**good, **patch}), locator="raw.env/0@3")
    assert err.value.field == field
    assert err.value.locator == "raw.env/0@3"


@given(st.binary(max_size=200))
def test_decode_never_raises_anything_but_envelope_error(payload: bytes) -> None:
    with contextlib.suppress(EnvelopeError):
        decode_envelope(payload, locator="x")


@given(text=st.text(st.characters(exclude_categories=()), max_size=30))
def test_any_text_attribute_encodes_and_surrogates_become_replacement_characters(
        text: str) -> None:
    """A JSON feed may carry ``"\\ud800"`` (Python's json accepts it): the record is kept,
    the broken character becomes U+FFFD, and the envelope encodes and decodes."""
    e = make_envelope(source="usgs", source_record_id="q1", domain="disaster",
                      kind="earthquake.reported", time=datetime(2024, 1, 1, tzinfo=UTC),
                      entity_id="q1", attributes={"place": text})
    place = decode_envelope(encode_envelope(e)).attributes["place"]
    assert place == "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)


def test_a_lone_surrogate_in_an_identifying_field_is_refused_by_name() -> None:
    with pytest.raises(EnvelopeError, match="entity_id.*surrogate"):
        make_envelope(source="usgs", source_record_id="q1", domain="disaster",
                      kind="earthquake.reported", time=datetime(2024, 1, 1, tzinfo=UTC),
                      entity_id="q\udc801")


@given(st.lists(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2600, 1, 1),
                             timezones=st.just(UTC)), max_size=50))
def test_epoch_seconds_equal_timestamp(times: list[datetime]) -> None:
    """The frames' time column (MessagePack timestamps read by numpy) equals each
    time's own ``timestamp()``, whatever mix of whole and fractional seconds, and
    before 1970, after 2106 (8-byte whole seconds) and after 2255 (the slow path)."""
    assert epoch_seconds(times).tolist() == [t.timestamp() for t in times]
    naive = [t.replace(tzinfo=None) for t in times]  # not an envelope's, but not an error
    assert epoch_seconds(times + naive).tolist() == [t.timestamp() for t in times + naive]
