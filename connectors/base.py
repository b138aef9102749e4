"""The connector base class.

A connector is a :class:`Source`: ``run()`` yields envelopes (valid records) and dead
letters (rejected records, with reason and locator) until the source is exhausted or
``stop()`` is called. A runner decides where they go: Kafka, or stdout for a dry run.

Example — a complete connector in a few lines:

    >>> from datetime import datetime, timezone
    >>> class Counter(Source):
    ...     domain = "traffic"
    ...     def run(self):
    ...         for i in range(3):
    ...             if not self.running:
    ...                 return
    ...             yield self.envelope(record_id=str(i), kind="traffic.volume",
    ...                 time=datetime(2024, 1, 1, i, tzinfo=timezone.utc),
    ...                 entity_id="counter-1", attributes={"volume": 100 * i})
    >>> [e.attributes["volume"] for e in Counter(name="counter").run()]
    [0, 100, 200]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from citywatch.streams.deadletter import DeadLetter
from citywatch.streams.envelope import AttributeValue, Envelope, EnvelopeError, make_envelope

SourceItem = Envelope | DeadLetter


class Source(ABC):
    """Base class of every connector.

    Subclasses set ``domain`` (or pass it) and implement :meth:`run`; they use
    :meth:`envelope` to build valid envelopes and :meth:`reject` for bad records.
    Connectors that can resume implement :meth:`checkpoint` (their position after the
    last item yielded, JSON-serialisable) and :meth:`restore`; connectors usable from
    ``citywatch connect`` implement :meth:`from_config`. A source that waits for input
    may yield ``None`` now and then (an idle tick) so the runner can checkpoint, and sets
    :attr:`wants_checkpoint` when it needs one soon (e.g. to acknowledge messages).
    """

    domain: str = ""
    summary: ClassVar[str] = ""

    def __init__(self, name: str, domain: str | None = None) -> None:
        self.name = name
        if domain:
            self.domain = domain
        self._running = True

    @property
    def running(self) -> bool:
        """False once :meth:`stop` was called; ``run()`` should return promptly then."""
        return self._running

    def stop(self) -> None:
        """Ask ``run()`` to finish after the current record."""
        self._running = False

    @abstractmethod
    def run(self) -> Iterator[SourceItem | None]:
        """Yield envelopes and dead letters (and ``None`` as an idle tick if it waits)."""

    def checkpoint(self) -> dict[str, Any]:
        """Where this source is, after the last item it yielded (default: nowhere)."""
        return {}

    @property
    def wants_checkpoint(self) -> bool:
        """True when the source needs a checkpoint before it can go on much longer."""
        return False

    def restore(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Continue from a :meth:`checkpoint` state on the next :meth:`run`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; called once after the final checkpoint."""

    @classmethod
    def from_config(cls, config: dict[str, Any], base_dir: Path) -> Source:
        """Build the connector from a YAML config (paths relative to ``base_dir``)."""
        raise NotImplementedError(f"{cls.__name__} cannot be configured from a file")

    def envelope(self, *, record_id: str, kind: str, time: datetime, entity_id: str,
                 geometry: dict[str, Any] | None = None,
                 attributes: dict[str, AttributeValue] | None = None,
                 locator: str | None = None) -> Envelope | DeadLetter:
        """A validated envelope from this source, or, when the record is not valid, the
        dead letter naming the field and the record (``locator``, default
        ``record RECORD_ID``): either way the item to yield, so one bad record never
        ends ``run()`` (an exception raised in a generator would end it for good).

        Example:
            >>> from datetime import datetime, timezone
            >>> class Quakes(Source):
            ...     domain = "disaster"
            ...     def run(self):
            ...         yield self.envelope(record_id="q1", kind="earthquake.reported",
            ...             time=datetime(2024, 1, 1, tzinfo=timezone.utc), entity_id="q1",
            ...             geometry={"type": "Point", "coordinates": [200.0, 95.0]})
            >>> letter = next(Quakes(name="usgs").run())
            >>> letter.locator, letter.field
            ('record q1', 'geometry.coordinates')
        """
        try:
            return make_envelope(source=self.name, source_record_id=record_id,
                                 domain=self.domain, kind=kind, time=time,
                                 entity_id=entity_id, geometry=geometry,
                                 attributes=attributes)
        except EnvelopeError as exc:
            where = locator or f"record {record_id}"
            return self.reject(exc.with_locator(where), locator=where,
                               raw=repr({"record_id": record_id, "kind": kind,
                                         "entity_id": entity_id,
                                         "attributes": attributes})[:2000])

    def reject(self, error: EnvelopeError | str, *, locator: str, raw: str = "",
               field: str | None = None) -> DeadLetter:
        """A dead letter for a record this source could not map (``field``: which one)."""
        if isinstance(error, str):
            error = EnvelopeError(error, field=field)
        return DeadLetter.from_error(error, stage="connector", source=self.name,
                                     locator=locator, raw=raw)


class CountingCheckpoint:
    """Checkpoint mix-in for sources whose input order is stable (files): the state is
    how many items were yielded; a restored run skips that many.

    Use it as ``yield from self.counted(self.items())`` inside ``run()``.
    """

    _items_done: int = 0
    _skip_items: int = 0

    def counted(self, items: Iterator[SourceItem]) -> Iterator[SourceItem]:
        self._items_done = 0
        for item in items:
            self._items_done += 1
            if self._items_done > self._skip_items:
                yield item

    def checkpoint(self) -> dict[str, Any]:
        return {"items_done": self._items_done}

    def restore(self, state: dict[str, Any]) -> None:
        self._skip_items = int(state.get("items_done", 0))
