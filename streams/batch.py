"""Micro-batch framing of the internal ``events`` topic.

Faust spends ~110 µs per Kafka message whatever the agent does, so the internal hot path
carries many envelopes per message: one MessagePack frame of a list of envelopes.
Public topics (``raw.*``, ``alerts``, team topics) keep one record per message.

Example:
    >>> from datetime import datetime, timezone
    >>> from citywatch.streams.envelope import make_envelope
    >>> e = make_envelope(source="s", source_record_id="1", domain="traffic",
    ...     kind="traffic.volume", time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    ...     entity_id="atr-301", attributes={"volume": 5000})
    >>> [x.id for x in decode_batch(encode_batch([e]))] == [e.id]
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from citywatch.streams.envelope import Envelope


class EventBatch(msgspec.Struct, frozen=True, gc=False):
    """A frame of validated envelopes, in arrival order, with where each came from:
    ``origins[i]`` is the raw ``topic/partition`` and ``offsets[i]`` the raw offset of
    ``events[i]`` (empty when not read from Kafka). Stateful rules use them to apply an
    event once even when ingest frames it again after a crash."""

    events: list[Envelope]
    origins: list[str] = []
    offsets: list[int] = []


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(EventBatch)


def encode_batch(events: Sequence[Envelope], origins: Sequence[str] = (),
                 offsets: Sequence[int] = ()) -> bytes:
    """MessagePack bytes for one ``events`` topic message."""
    return _encoder.encode(EventBatch(list(events), list(origins), list(offsets)))


def decode_frame(payload: bytes) -> EventBatch:
    """One ``events`` topic message."""
    return _decoder.decode(payload)


def decode_batch(payload: bytes) -> list[Envelope]:
    """Envelopes from one ``events`` topic message."""
    return decode_frame(payload).events
