"""Stateful-rule state: a dict in the worker, backed by a changelog topic.

Each ``events`` frame's state changes leave as **one** changelog message on the frame's
partition, after the frame's alerts are acknowledged; a worker that starts (or is given
a partition) replays that partition's changelog before it evaluates the partition's
frames. A frame is thus applied to the state all or nothing, and the offsets stamped on
every value (see :class:`citywatch.rules.state.FrameState`) make a re-read frame a no-op
for the state.

Faust tables were the first choice; their recovery waits forever on the embedded
broker, which reports a partition's high watermark as the base offset of its last record
batch (see :mod:`citywatch.streams.kafka_admin`); this store reads changelogs to their true
end and works the same on any Kafka.

Each partition's state is kept apart (:meth:`ChangelogState.use` selects the one a frame
reads): keys of different partitions never meet, rule clocks (an absence rule's stream
time, the seen-id clock) are per partition, and a partition given to another worker is
dropped whole.

Example:
    >>> state = ChangelogState()
    >>> state.set("rule@v|e1", [3, {"n": 1}])
    >>> state.take_writes()
    {'rule@v|e1': [3, {'n': 1}]}
    >>> state.apply(encode_writes({"rule@v|e2": [4, {"n": 2}]}))
    >>> sorted(state.data)
    ['rule@v|e1', 'rule@v|e2']
    >>> state.use(1); state.get("rule@v|e1") is None
    True
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(dict[str, Any])


def encode_writes(writes: dict[str, Any]) -> bytes:
    return _encoder.encode(writes)


class ChangelogState:
    """A :class:`citywatch.rules.state.StateStore` whose writes are collected per frame
    for the changelog, and which is rebuilt by replaying the changelog."""

    def __init__(self) -> None:
        self.partitions: dict[int, dict[str, Any]] = {}
        self.recovered: set[int] = set()
        self.scope = 0  # the partition in use
        self._writes: dict[str, Any] = {}

    def use(self, partition: int) -> None:
        """Read and write ``partition``'s state from now on."""
        self.scope = partition

    @property
    def data(self) -> dict[str, Any]:
        """The state of the partition in use."""
        found = self.partitions.get(self.scope)
        if found is None:
            found = self.partitions[self.scope] = {}
        return found

    def forget(self, partition: int) -> None:
        """Drop a partition given to another worker (recovered again if it comes back)."""
        self.partitions.pop(partition, None)
        self.recovered.discard(partition)

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` (``None`` deletes ``key``, in memory and in the changelog)."""
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value
        self._writes[key] = value

    def items_with_prefix(self, prefix: str) -> Iterator[tuple[str, Any]]:
        return ((k, v) for k, v in list(self.data.items()) if k.startswith(prefix))

    def take_writes(self) -> dict[str, Any]:
        """The writes since the last call (one changelog message)."""
        writes, self._writes = self._writes, {}
        return writes

    def apply(self, message: bytes) -> None:
        """Replay one changelog message."""
        self._apply(_decoder.decode(message))

    def _apply(self, writes: dict[str, Any]) -> None:
        for key, value in writes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def recover(self, partition: int, messages: Iterable[bytes],
                log_end: int | None = None) -> int:
        """Replay a partition's changelog; returns the number of messages applied.

        Every value is stamped with the offset of the events frame that wrote it. With
        ``log_end`` (the events partition's end offset), a changelog stamped at or
        beyond it belongs to an earlier events log of that name (the broker lost its data
        and the topic was created again): it is ignored whole, so the new log's frames
        are not mistaken for frames already applied.
        """
        self.use(partition)
        self.partitions.pop(partition, None)
        decoded = [_decoder.decode(message) for message in messages]
        if log_end is not None and any(
                isinstance(value, list) and value and isinstance(value[0], int)
                and value[0] >= log_end
                for writes in decoded for value in writes.values()):
            log.warning("rule-state changelog of partition %d (%d messages) is stamped "
                        "beyond the end of its events log (%d): it belongs to an events "
                        "log the broker lost; ignored", partition, len(decoded), log_end)
            self.recovered.add(partition)
            return 0
        for writes in decoded:
            self._apply(writes)
        self.recovered.add(partition)
        return len(decoded)
