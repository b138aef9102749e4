"""Zone-keyed rules over many partitions: which rules keep their state per zone, which
partition owns a zone, and where each row of a frame must go.

Events are partitioned by entity, which keeps an entity's events in order on one
partition. Zone windows and correlations keep state per *zone*, whose events come from
every entity partition, so the worker evaluates them in a second stage: the first stage
sends each row such a rule reads to the partition that owns the row's zone (every zone
it touches: a correlation side with ``near_m`` reaches several), and that partition's
owner evaluates them.

Example:
    >>> zone_partition("boroughs", "36061", 4) == zone_partition("boroughs", "36061", 4)
    True
    >>> 0 <= zone_partition("boroughs", "36061", 4) < 4
    True
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray

from citywatch.geo.zones import ZoneIndex
from citywatch.rules.frame import EventFrame
from citywatch.rules.model import Correlate, Rule, Window

Mask = NDArray[np.bool_]


def zone_keyed(rule: Rule) -> bool:
    """Whether a rule keeps its state per zone (a zone window or a correlation)."""
    cond = rule.condition
    return isinstance(cond, Correlate) or (isinstance(cond, Window)
                                           and cond.zone_layer is not None)


def zone_partition(layer: str, zone_id: str, partitions: int) -> int:
    """The partition that owns a zone's state (stable across rule-set versions)."""
    return zlib.crc32(f"{layer}/{zone_id}".encode()) % partitions


class ZoneRouter:
    """Where the rows zone-keyed rules read go, for ``partitions`` partitions.

    Example:
        >>> from citywatch.rules.model import RuleSet
        >>> rules = RuleSet.model_validate({"rules": []}).rules
        >>> ZoneRouter(rules, ZoneIndex([]), 4).rules
        []
    """

    def __init__(self, rules: Sequence[Rule], zones: ZoneIndex, partitions: int) -> None:
        self.rules = [r for r in rules if zone_keyed(r)]
        self.zones = zones
        self.partitions = partitions
        self._owners: dict[str, NDArray[np.int64]] = {}

    def owners(self, layer: str) -> NDArray[np.int64]:
        """The owning partition of each zone of ``layer``, by zone index."""
        found = self._owners.get(layer)
        if found is None:
            ids = self.zones.layers[layer].zone_ids
            found = self._owners[layer] = np.array(
                [zone_partition(layer, str(z), self.partitions) for z in ids], dtype=np.int64)
        return found

    def owned(self, layer: str, zone_col: NDArray[np.int64], shard: int) -> Mask:
        """Rows whose zone of ``layer`` is owned by partition ``shard``."""
        inside = zone_col >= 0
        return inside & (self.owners(layer)[np.where(inside, zone_col, 0)] == shard)

    def routes(self, frame: EventFrame,
               reads: Callable[[str, list[str] | None], Mask]) -> dict[int, list[int]]:
        """Rows of ``frame`` per owning partition (each row once per partition, in
        arrival order). ``reads(domain, kinds)`` is where a rule side could read."""
        rows: list[NDArray[np.int64]] = []
        parts: list[NDArray[np.int64]] = []
        located = ~np.isnan(frame.lon)

        def by_zone(layer: str, mask: Mask) -> None:
            zone_col = frame.zones[layer]
            chosen = np.flatnonzero(mask & located & (zone_col >= 0))
            rows.append(chosen)
            parts.append(self.owners(layer)[zone_col[chosen]])

        for rule in self.rules:
            cond = rule.condition
            if isinstance(cond, Window):
                assert cond.zone_layer is not None
                by_zone(cond.zone_layer, reads(rule.domain, rule.kinds))
                continue
            assert isinstance(cond, Correlate)
            layer = self.zones.layers[cond.layer]
            for side in (cond.first, cond.second):
                mask = reads(side.domain, side.kinds)
                if not side.near_m:
                    by_zone(cond.layer, mask)
                    continue
                owners = self.owners(cond.layer)
                for i in np.flatnonzero(mask & located).tolist():
                    near = layer.zones_within(float(frame.lon[i]), float(frame.lat[i]),
                                              side.near_m)
                    rows.append(np.full(len(near), i, dtype=np.int64))
                    parts.append(owners[np.asarray(near, dtype=np.int64)])
        if not rows or not sum(len(r) for r in rows):
            return {}
        pairs = np.unique(np.stack([np.concatenate(parts), np.concatenate(rows)]), axis=1)
        out: dict[int, list[int]] = {}
        for part in np.unique(pairs[0]).tolist():
            out[part] = pairs[1][pairs[0] == part].tolist()  # unique sorts: arrival order
        return out
