"""The pipeline as the broker sees it: each stage's lag and the dead letters of the last
hour (for ``citywatch status`` and the console's indicators).

Example:
    >>> from citywatch.ops.settings import Settings
    >>> broker_status(Settings(kafka_bootstrap=None))["reachable"]
    False
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from citywatch.ops.settings import Settings


def broker_status(settings: Settings) -> dict[str, Any]:
    """The broker reachable or why not; each stage's lag and dead letters in the last
    hour when it is."""
    from citywatch.ops.cli.exits import first_line
    from citywatch.streams.kafka_admin import KafkaAdmin, broker_problem
    from citywatch.streams.lag import stage_lags

    bootstrap = settings.kafka_bootstrap
    if bootstrap is None:
        return {"bootstrap": None, "reachable": False,
                "error": "CITYWATCH_KAFKA_BOOTSTRAP is not set (the embedded broker lives "
                         "only as long as `citywatch broker` or `citywatch demo`)"}
    problem = broker_problem(bootstrap, timeout_s=5.0)
    if problem is not None:
        return {"bootstrap": bootstrap, "reachable": False, "error": problem}
    hour_ago = int((time.time() - 3600) * 1000)
    try:
        with KafkaAdmin(bootstrap, timeout_ms=10_000) as admin:
            lags = stage_lags(admin, settings)
            dead = admin.count_since(settings.topics.deadletter, hour_ago)
    except Exception as exc:
        return {"bootstrap": bootstrap, "reachable": False, "error": first_line(exc)}
    return {"bootstrap": bootstrap, "reachable": True, "lag": lags,
            "dead_letters_last_hour": dead}


class TimedCache:
    """``compute()``'s result, computed again at most every ``seconds`` (a slow check
    answered to many callers).

    Example:
        >>> calls = []
        >>> cache = TimedCache(lambda: calls.append(1) or len(calls), seconds=60)
        >>> cache.get(), cache.get()
        (1, 1)
    """

    def __init__(self, compute: Callable[[], Any], seconds: float) -> None:
        self.compute, self.seconds = compute, seconds
        self._value: tuple[float, Any] | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if self._value is None or now - self._value[0] > self.seconds:
                self._value = (now, self.compute())
            return self._value[1]


def tile_origins(template: str | None) -> tuple[str, ...]:
    """The origin a tile URL template loads from (for the CSP), if any.

    Example:
        >>> tile_origins("https://tiles.city.example/{z}/{x}/{y}.png")
        ('https://tiles.city.example',)
    """
    if not template:
        return ()
    from urllib.parse import urlsplit

    parts = urlsplit(template.replace("{s}", "a"))
    return (f"{parts.scheme}://{parts.netloc}",) if parts.scheme and parts.netloc else ()
