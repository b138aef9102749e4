"""Where stateful rules keep their state, and how a replayed frame is applied only once.

A :class:`StateStore` is a key → value mapping of plain data (lists, dicts, numbers,
strings) that survives restarts: a dict in tests and dry runs, a changelog-backed Faust
table in the worker. :class:`FrameState` stamps every value with the stream position of
the frame that wrote it, so after a crash a frame read again is skipped for the keys it
already updated and applied for the others: state is exactly-once in effect, and the
alerts of a replayed key come out with the same deterministic ids.

Example:
    >>> store = MemoryState()
    >>> first = FrameState(store, position=7)
    >>> first.load("k")
    (True, None)
    >>> first.save("k", {"n": 1}); first.commit()
    >>> FrameState(store, position=7).load("k")   # the same frame again: already applied
    (False, None)
    >>> FrameState(store, position=8).load("k")
    (True, {'n': 1})
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class StateStore(Protocol):
    """Durable key → plain-data mapping used by stateful rules."""

    def get(self, key: str) -> Any:
        """The stored value or ``None``."""
        ...

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key``; ``None`` deletes the key."""
        ...

    def items_with_prefix(self, prefix: str) -> Iterator[tuple[str, Any]]:
        ...


class MemoryState:
    """A :class:`StateStore` in a dict (dry runs, backtests, tests).

    Example:
        >>> s = MemoryState(); s.set("a|1", 1); list(s.items_with_prefix("a|"))
        [('a|1', 1)]
    """

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    def items_with_prefix(self, prefix: str) -> Iterator[tuple[str, Any]]:
        return ((k, v) for k, v in list(self.data.items()) if k.startswith(prefix))


class FrameState:
    """The state seen by one frame at stream ``position`` (offsets only grow).

    Writes are held until :meth:`commit`, so a caller can make the frame's alerts
    durable first: a crash then never leaves state that claims alerts nobody received.
    """

    def __init__(self, store: StateStore, position: int) -> None:
        self.store = store
        self.position = position
        self.pending: dict[str, Any] = {}

    def load(self, key: str) -> tuple[bool, Any]:
        """``(fresh, value)``: ``fresh`` is false when this frame already updated ``key``
        (a replay after a crash); the caller then leaves the key alone."""
        if key in self.pending:
            pending = self.pending[key]
            return True, None if pending is None else pending[1]
        stored = self.store.get(key)
        if stored is None:
            return True, None
        written_at, value = stored
        if written_at >= self.position:
            return False, None
        return True, value

    def save(self, key: str, value: Any) -> None:
        self.pending[key] = [self.position, value]

    def delete(self, key: str) -> None:
        """Forget ``key`` when the frame commits."""
        self.pending[key] = None

    def commit(self) -> None:
        """Write the frame's changes to the store."""
        for key, stamped in self.pending.items():
            self.store.set(key, stamped)
        self.pending.clear()

    def values_with_prefix(self, prefix: str) -> Iterator[tuple[str, Any]]:
        """Committed values (whatever frame wrote them) of keys starting with ``prefix``."""
        return ((k, stored[1]) for k, stored in self.store.items_with_prefix(prefix))
