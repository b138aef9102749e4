"""Dead-letter records: what was rejected, where it came from, and why.

Example:
    >>> d = DeadLetter(stage="connector", source="epa-aqs", locator="epa.csv:7",
    ...                field="attributes.pm25", error="'n/a' is not a number", raw="...")
    >>> decode_deadletter(encode_deadletter(d)).locator
    'epa.csv:7'
"""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from citywatch.streams.envelope import EnvelopeError


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """One rejected record.

    ``locator`` names the record in its source (``file:line``, ``topic/partition@offset``);
    ``raw`` is the original payload as text so it can be fixed and replayed.
    """

    stage: str
    source: str
    locator: str
    error: str
    field: str | None = None
    raw: str = ""
    time: datetime = msgspec.field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def from_error(cls, exc: EnvelopeError, *, stage: str, source: str, locator: str,
                   raw: str) -> DeadLetter:
        return cls(stage=stage, source=source, locator=exc.locator or locator,
                   field=exc.field, error=exc.reason, raw=raw)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(DeadLetter)


def encode_deadletter(record: DeadLetter) -> bytes:
    return _encoder.encode(record)


def decode_deadletter(payload: bytes) -> DeadLetter:
    return _decoder.decode(payload)
