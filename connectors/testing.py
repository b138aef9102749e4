"""The connector contract test kit.

Subclass :class:`ConnectorContract` in a pytest module and say how to build your
connector on good input and on input with bad records; pytest then runs the contract:
valid envelopes, bad records into dead letters, prompt stop, resume without duplicates.

Example (a test module of a plug-in)::

    from citywatch.connectors.testing import ConnectorContract

    class TestMyFeed(ConnectorContract):
        def make_source(self, session="default"):
            return MyFeedSource(path=GOOD_FILE)

        def make_bad_source(self):
            return MyFeedSource(path=FILE_WITH_BAD_ROWS)

``session`` names a run: ``"full"`` for a complete reference run, ``"split"`` for the
run that is stopped, checkpointed and resumed; connectors whose input is consumed by
reading it (a message broker) use it to set up fresh input per session.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from citywatch.connectors.base import Source, SourceItem
from citywatch.streams.deadletter import DeadLetter
from citywatch.streams.envelope import Envelope, decode_envelope, encode_envelope


def collect(source: Source, limit: int | None = None) -> list[SourceItem]:
    """Run ``source`` (up to ``limit`` items), then checkpoint and close it."""
    items: list[SourceItem] = []
    generator = source.run()
    try:
        for item in generator:
            if source.wants_checkpoint:  # as the runner does, after "sending" the items
                source.checkpoint()
            if item is None:  # an idle tick
                continue
            items.append(item)
            if limit is not None and len(items) >= limit:
                break
    finally:
        generator.close()
    return items


def assert_valid_items(source: Source, items: list[SourceItem]) -> list[Envelope]:
    """Every item is an envelope that survives a JSON round trip, or a dead letter."""
    envelopes = []
    for item in items:
        assert isinstance(item, Envelope | DeadLetter), f"unexpected item {item!r}"
        if isinstance(item, Envelope):
            assert decode_envelope(encode_envelope(item)) == item
            assert item.source == source.name
            envelopes.append(item)
    return envelopes


def assert_rejects(source: Source, items: list[SourceItem]) -> list[DeadLetter]:
    """At least one dead letter, each naming the source, the record and the reason."""
    letters = [i for i in items if isinstance(i, DeadLetter)]
    assert letters, "bad input produced no dead letter"
    for letter in letters:
        assert letter.source == source.name and letter.locator and letter.error, letter
    return letters


def assert_stops_within(source: Source, seconds: float = 5.0) -> None:
    """``stop()`` from another thread ends ``run()`` within ``seconds``."""
    done = threading.Event()

    def consume() -> None:
        for _ in source.run():
            if source.wants_checkpoint:
                source.checkpoint()
        done.set()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    time.sleep(0.2)
    source.stop()
    assert done.wait(seconds), f"run() still going {seconds}s after stop()"
    source.close()


def item_ids(items: list[SourceItem]) -> Counter[str]:
    return Counter(i.id if isinstance(i, Envelope) else f"dl:{i.locator}" for i in items)


class ConnectorContract:
    """Mixin of contract tests; implement :meth:`make_source` and :meth:`make_bad_source`."""

    resume_after: int = 3

    def make_source(self, session: str = "default") -> Source:
        raise NotImplementedError

    def make_bad_source(self) -> Source:
        raise NotImplementedError

    def test_emits_valid_envelopes(self) -> None:
        source = self.make_source("full")
        envelopes = assert_valid_items(source, collect(source))
        source.close()
        assert envelopes, "no envelope from good input"

    def test_rejects_bad_input_into_deadletter(self) -> None:
        source = self.make_bad_source()
        items = collect(source)
        source.close()
        assert_valid_items(source, items)
        assert_rejects(source, items)

    def test_stops_promptly(self) -> None:
        assert_stops_within(self.make_source("stop"))

    def test_resumes_without_duplicates(self) -> None:
        reference = self.make_source("full")
        full = item_ids(collect(reference))
        reference.close()
        first = self.make_source("split")
        head = collect(first, limit=self.resume_after)
        state = json.loads(json.dumps(first.checkpoint()))  # must be JSON-serialisable
        first.close()
        second = self.make_source("split")
        second.restore(state)
        tail = collect(second)
        second.checkpoint()
        second.close()
        both = item_ids(head) + item_ids(tail)
        assert both - full == Counter(), f"resumed run repeated {both - full}"
        assert full - both == Counter(), f"resumed run lost {full - both}"
