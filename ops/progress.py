"""Pipeline progress as consumer-group lag: how much of each stage is still to do.

Example:
    >>> from citywatch.ops.settings import Settings
    >>> with KafkaAdmin("127.0.0.1:9092") as admin:     # doctest: +SKIP
    ...     stage_lags(admin, Settings())
    {'ingest': 0, 'rules': 0, 'store': 0}
"""

from __future__ import annotations

import time
from collections.abc import Callable

from citywatch.ops.settings import Settings
from citywatch.streams.kafka_admin import KafkaAdmin
from citywatch.streams.lag import stage_lags


class PipelineStalled(RuntimeError):
    """The pipeline did not drain in time, or the worker died."""


def wait_until_drained(admin: KafkaAdmin, settings: Settings, *, timeout: float = 180.0,
                       alive: Callable[[], bool] = lambda: True,
                       poll: float = 0.2, owed: Callable[[], int] = lambda: 0,
                       observe: Callable[[dict[str, int]], None] | None = None) -> None:
    """Block until every stage has zero lag, and nothing ``owed`` (deliveries due to
    teams), twice in a row; ``observe`` sees the lags at every poll."""
    deadline = time.monotonic() + timeout
    clean = 0
    lags: dict[str, int] = {}
    while time.monotonic() < deadline:
        if not alive():
            raise PipelineStalled("the worker process exited")
        lags = stage_lags(admin, settings)
        lags["deliveries"] = owed()
        if observe is not None:
            observe(lags)
        clean = clean + 1 if not any(lags.values()) else 0
        if clean >= 2:
            return
        time.sleep(poll)
    raise PipelineStalled(f"pipeline not drained after {timeout:.0f}s: lag {lags}")
