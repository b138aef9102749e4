"""What ``GET /health`` reports: the incident store and the broker, each on its own.

The store is what the API serves from: while it is unreachable every endpoint answers
``503``. The broker is reported but the API does not need it to serve. A broker check is
a Kafka metadata request, remembered for ``broker_cache_seconds`` so a monitoring probe
cannot make the API hammer the broker.

Example:
    >>> from citywatch.ops.store.store import IncidentStore
    >>> checks = HealthChecks(IncidentStore("sqlite://"), bootstrap=None, topic="t")
    >>> checks.store(), checks.broker()
    ('ok', 'not configured')
"""

from __future__ import annotations

import time

from sqlalchemy import text

from citywatch.ops.store.outage import OUTAGE_ERRORS, store_outage
from citywatch.ops.store.store import IncidentStore
from citywatch.streams.kafka_admin import KafkaAdmin


class HealthChecks:
    """Checks of the store and the broker (blocking; run them in a thread)."""

    def __init__(self, store: IncidentStore, *, bootstrap: str | None, topic: str,
                 broker_cache_seconds: float = 5.0) -> None:
        self._store = store
        self.bootstrap = bootstrap
        self.topic = topic
        self.broker_cache_seconds = broker_cache_seconds
        self._broker: tuple[float, str] | None = None

    def store(self) -> str:
        """``ok``, or ``unavailable: <reason>``."""
        try:
            with self._store.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OUTAGE_ERRORS as exc:
            reason = store_outage(exc)
            if reason is None:
                raise
            return f"unavailable: {reason}"
        return "ok"

    def broker(self) -> str:
        """``ok``, ``not configured`` or ``unreachable: <reason>``."""
        if not self.bootstrap:
            return "not configured"
        now = time.monotonic()
        if self._broker is not None and now - self._broker[0] < self.broker_cache_seconds:
            return self._broker[1]
        try:
            with KafkaAdmin(self.bootstrap, timeout_ms=2000) as admin:
                admin.partition_counts([self.topic])
            status = "ok"
        except Exception as exc:  # any client failure means: not usable now
            status = f"unreachable: {type(exc).__name__}"
        self._broker = (now, status)
        return status
