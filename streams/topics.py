"""Topic names, derived from one configurable prefix.

Example:
    >>> names = TopicNames(prefix="city.")
    >>> names.raw("traffic"), names.events, names.alerts, names.deadletter
    ('city.raw.traffic', 'city.events', 'city.alerts', 'city.deadletter')
"""

from __future__ import annotations

from dataclasses import dataclass

from citywatch.streams.envelope import DOMAINS


@dataclass(frozen=True)
class TopicNames:
    """All topic names citywatch uses, under ``prefix``."""

    prefix: str = ""

    def raw(self, domain: str) -> str:
        """Connector output for one domain: one envelope (JSON) per message."""
        return f"{self.prefix}raw.{domain}"

    @property
    def raw_all(self) -> list[str]:
        return [self.raw(d) for d in DOMAINS]

    @property
    def events(self) -> str:
        """Internal: validated envelopes, micro-batched (MessagePack)."""
        return f"{self.prefix}events"

    @property
    def alerts(self) -> str:
        """Public: one alert (JSON) per message."""
        return f"{self.prefix}alerts"

    @property
    def deadletter(self) -> str:
        """Rejected records with reason, locator and raw payload (JSON)."""
        return f"{self.prefix}deadletter"

    @property
    def rule_state(self) -> str:
        """Internal: changelog of stateful rules' state, one message per frame, on the
        partition of the ``events`` frame that wrote it."""
        return f"{self.prefix}rule-state"

    @property
    def events_keyed(self) -> str:
        """Internal: the events rules keep per zone (zone windows, correlations),
        re-partitioned by zone (MessagePack frames, one per ``events`` frame and
        partition, each with its source partition's stream time)."""
        return f"{self.prefix}events.keyed"

    @property
    def rule_state_keyed(self) -> str:
        """Internal: changelog of the zone-keyed rules' state, on the partition of the
        ``events.keyed`` frame that wrote it."""
        return f"{self.prefix}rule-state.keyed"

    def team(self, team: str) -> str:
        """Alerts routed to one team's subscription."""
        return f"{self.prefix}alerts.team.{team}"

    @property
    def all(self) -> list[str]:
        return [*self.raw_all, self.events, self.alerts, self.deadletter, self.rule_state,
                self.events_keyed, self.rule_state_keyed]

    @property
    def any_partitions(self) -> list[str]:
        """Topics whose partition count does not matter: ingest re-partitions raw events
        by entity, and dead letters have no order (a broker that auto-creates topics may
        have made them with its default count). The others must have the configured
        count: the rule state is partitioned like the events it belongs to."""
        return [*self.raw_all, self.deadletter]
