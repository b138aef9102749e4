"""Notices when a worker can no longer make progress against its broker.

Kafka clients reconnect on their own after a broker outage, and a worker carries on when
the broker returns with its data. Three things they never recover from, and would hang
on while looking healthy:

* the broker stays unreachable longer than ``CITYWATCH_BROKER_LOST_SECONDS``;
* the broker came back **without its data** (the embedded broker keeps everything in
  memory, so a restart empties it): citywatch's topics are gone, have another partition
  count, or a partition's end offset went back;
* the rules stage commits nothing for ``CITYWATCH_BROKER_LOST_SECONDS`` while events wait.

:meth:`BrokerWatch.check` returns the reason in one line; the worker logs it and exits
with :data:`EXIT_BROKER_LOST` so its supervisor restarts it (a restarted worker creates
the topics again with the configured partition counts).

Example:
    >>> watch = BrokerWatch(StreamSettings(), "127.0.0.1:9092")      # doctest: +SKIP
    >>> watch.check() is None                                          # doctest: +SKIP
    True
"""

from __future__ import annotations

import logging
import time

from kafka.errors import KafkaError

from citywatch.streams.kafka_admin import KafkaAdmin
from citywatch.streams.settings import StreamSettings

log = logging.getLogger(__name__)

EXIT_BROKER_LOST = 75
"""Exit status of a worker that lost its broker (EX_TEMPFAIL: restart me)."""

LOST_DATA = ("the broker lost its data (a restarted embedded broker is empty: it keeps "
             "everything in memory)")


class BrokerWatch:
    """Periodic checks of the broker a worker depends on (blocking; run in a thread)."""

    def __init__(self, settings: StreamSettings, bootstrap: str) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = settings.topics.all
        self.unreachable_since: float | None = None
        self._ends: dict[object, int] = {}
        self._committed = -1
        self._committed_since = time.monotonic()

    def check(self) -> str | None:
        """``None`` while the worker can go on; otherwise why it cannot."""
        now = time.monotonic()
        lost_after = self.settings.broker_lost_seconds
        try:
            with KafkaAdmin(self.bootstrap, timeout_ms=5000) as admin:
                problems = admin.layout_problems(self.topics, self.settings.topic_partitions,
                                                 self.settings.topics.any_partitions)
                if problems:
                    return f"{LOST_DATA}: {problems[0]}"
                ends = admin.reported_end_offsets(self.topics)
                events = self.settings.topics.events
                waiting = sum(end for tp, end in ends.items() if tp.topic == events)
                committed = sum(offset for tp, offset in admin.committed(
                    self.settings.app_id).items() if tp.topic == events)
        except (KafkaError, OSError, TimeoutError) as exc:
            if self.unreachable_since is None:
                self.unreachable_since = now
                log.warning("broker %s unreachable (%s); waiting up to %.0f s for it",
                            self.bootstrap, type(exc).__name__, lost_after)
            if now - self.unreachable_since > lost_after:
                return (f"the broker at {self.bootstrap} has been unreachable for "
                        f"{now - self.unreachable_since:.0f} s")
            return None
        if self.unreachable_since is not None:
            log.warning("broker %s reachable again after %.0f s", self.bootstrap,
                        now - self.unreachable_since)
            self.unreachable_since = None
        went_back = [f"{tp.topic}/{tp.partition} {self._ends[tp]} -> {end}"
                     for tp, end in ends.items() if end < self._ends.get(tp, 0)]
        self._ends = dict(ends)
        if went_back:
            return f"{LOST_DATA}: end offset went back on {went_back[0]}"
        if committed != self._committed or committed >= waiting:
            self._committed, self._committed_since = committed, now
        elif now - self._committed_since > lost_after:
            return (f"the rules stage has committed nothing for "
                    f"{now - self._committed_since:.0f} s while "
                    f"{waiting - committed} event frames wait")
        return None
