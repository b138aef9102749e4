"""Failed authentications counted per client address, to slow down token guessing.

An address with ``limit`` failures within the last ``window`` seconds is refused (the API
answers ``429`` with ``Retry-After``) until the oldest of them is ``window`` seconds old,
whatever token it then presents. Held in the API process's memory: each API process
counts on its own, and a restart forgets. At most ``max_addresses`` addresses are
tracked (the least recently failing is forgotten first), so a flood from many addresses
cannot grow it without bound.

Example:
    >>> t = FailureThrottle(limit=2, window=60.0, clock=lambda: 100.0)
    >>> t.failed("10.0.0.9"); t.retry_after("10.0.0.9") is None
    True
    >>> t.failed("10.0.0.9"); t.retry_after("10.0.0.9")
    60.0
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class FailureThrottle:
    """Counts failures per key over a sliding window (see the module docs)."""

    def __init__(self, limit: int, window: float = 60.0, *, max_addresses: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        horizon = self.clock() - self.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it may now."""
        times = self._recent(key)
        if times is None or len(times) < self.limit:
            return None
        return times[-self.limit] + self.window - self.clock()

    def failed(self, key: str) -> None:
        """Count one failure of ``key``."""
        times = self._recent(key) or deque(maxlen=self.limit)
        times.append(self.clock())
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)
