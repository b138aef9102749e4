"""The incident store as a worker's alert sink, built in the worker's store process
(which imports this, not the whole composition root: it starts with every worker)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import timedelta

from citywatch.ops.settings import Settings
from citywatch.ops.store.outage import OUTAGE_ERRORS, store_outage
from citywatch.ops.store.outbox import Outbox
from citywatch.ops.store.store import IncidentStore
from citywatch.streams.alert import Alert
from citywatch.streams.store_stage import SinkUnavailable


class StoreSink:
    """The incident store as the worker's alert sink: outages (connection refused or
    lost, a locked SQLite file, a pool timeout) become
    :class:`~citywatch.streams.store_stage.SinkUnavailable`, retried by the worker; anything
    else is a refusal of the batch.

    Example:
        >>> store = IncidentStore("sqlite://")
        >>> store.create_schema()
        >>> StoreSink(store).add_new_alerts([])
        set()
    """

    def __init__(self, store: IncidentStore, outbox: Outbox | None = None) -> None:
        self.store = store
        self.outbox = outbox

    def add_new_alerts(self, alerts: Sequence[Alert]) -> set[str]:
        """Store ``alerts``; those new to the store are owed to the subscriptions they
        match (the outbox, in the same transaction)."""
        with outage_is_unavailable():
            return self.store.add_new_alerts(
                alerts, also=self.outbox.enqueue if self.outbox else None)


@contextlib.contextmanager
def outage_is_unavailable() -> Iterator[None]:
    """Store outages (connection refused or lost, a locked SQLite file, a pool timeout)
    raised inside become :class:`~citywatch.streams.store_stage.SinkUnavailable`."""
    try:
        yield
    except OUTAGE_ERRORS as exc:
        reason = store_outage(exc)
        if reason is None:
            raise
        raise SinkUnavailable(reason) from exc


def open_sink(settings: Settings) -> StoreSink:
    """The alert sink of a worker's store process: the incident store at
    ``settings.database_url``, with its delivery outbox (built in that process: the
    pipeline is given this function, which pickles, not an engine, which does not)."""
    store = IncidentStore(settings.database_url, correlation_window=timedelta(hours=24))
    return StoreSink(store, Outbox(store))
