"""Vectorised rule evaluation over batches of envelopes.

Example:
    >>> from datetime import datetime, timezone
    >>> from citywatch.rules.model import RuleSet
    >>> from citywatch.geo.zones import ZoneIndex
    >>> from citywatch.streams.envelope import make_envelope
    >>> rules = RuleSet.model_validate({"rules": [{"id": "heavy", "domain": "traffic",
    ...     "condition": {"type": "threshold", "attribute": "volume", "op": ">=", "value": 6000},
    ...     "alert": {"severity": "Minor", "category": "Transport",
    ...               "message": "{volume} veh/h at {entity_id}"}}]})
    >>> engine = RuleEngine(rules, ZoneIndex([]))
    >>> ev = make_envelope(source="i94", source_record_id="1", domain="traffic",
    ...     kind="traffic.volume", time=datetime(2018, 9, 3, 16, tzinfo=timezone.utc),
    ...     entity_id="atr-301", attributes={"volume": 6500})
    >>> [a.message for a in engine.evaluate([ev])]
    ['6500 veh/h at atr-301']
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from string import Formatter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citywatch.geo.sites import SiteLayer, distances_to_point
from citywatch.geo.zones import ZoneIndex, ZoneLayer
from citywatch.rules.alert import Alert, alert_id
from citywatch.rules.frame import EventFrame
from citywatch.rules.model import (
    AllOf,
    AnyOf,
    Condition,
    InZone,
    Match,
    Not,
    Proximity,
    Rule,
    RuleSet,
    Threshold,
)
from citywatch.streams.envelope import Envelope

Mask = NDArray[np.bool_]
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}


class _TemplateValues(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


class RuleEngine:
    """Evaluates every enabled rule of a rule set on a batch at once.

    ``evaluate`` never raises on valid envelopes: an event missing an attribute or a
    location simply does not match conditions that need it.
    """

    def __init__(self, ruleset: RuleSet, zones: ZoneIndex,
                 sites: dict[str, SiteLayer] | None = None) -> None:
        self.ruleset = ruleset
        self.zones = zones
        self.sites = sites or {}
        self.rules = [r for r in ruleset.rules if r.enabled]
        self._versions = {r.id: r.version for r in self.rules}
        self._zone_sets = {
            id(c): np.array([n in set(c.zones) for n in zones.layers[c.layer].zone_names])
            for r in self.rules for c in r.conditions()
            if isinstance(c, InZone) and c.zones is not None
        }
        self._proximity = {r.id: next((c for c in r.conditions()
                                       if isinstance(c, Proximity)), None)
                           for r in self.rules}
        self._fields = {r.id: {f for _, f, _, _ in Formatter().parse(r.alert.message) if f}
                        for r in self.rules}

    @classmethod
    def from_ruleset(cls, ruleset: RuleSet) -> RuleEngine:
        """An engine with the rule set's zone and site layers loaded from their files."""
        sites = {s.layer: SiteLayer.from_file(s.layer, s.path, name_field=s.name_field)
                 for s in ruleset.sites}
        return cls(ruleset, build_zone_index(ruleset), sites)

    def evaluate(self, events: Sequence[Envelope]) -> list[Alert]:
        if not events:
            return []
        frame = EventFrame(events, self.zones)
        raised_at = datetime.now(UTC)
        alerts: list[Alert] = []
        for rule in self.rules:
            mask = frame.domain == rule.domain
            if rule.kinds:
                mask &= np.isin(frame.kind, rule.kinds)
            if not mask.any():
                continue
            mask &= self._condition(rule.condition, frame)
            for i in np.flatnonzero(mask):
                alerts.append(self._alert(rule, frame, int(i), raised_at))
        return alerts

    def _condition(self, cond: Condition, frame: EventFrame) -> Mask:
        if isinstance(cond, Threshold):
            col = frame.column(cond.attribute)
            with np.errstate(invalid="ignore"):
                if cond.range is not None:
                    low, high = cond.range
                    inside = (col >= low) & (col <= high)
                    return inside if cond.op == "between" else ~inside & ~np.isnan(col)
                return _OPS[cond.op](col, cond.value) & ~np.isnan(col)
        if isinstance(cond, Match):
            wanted = set(cond.values)
            return np.fromiter((v in wanted for v in frame.text_column(cond.attribute)),
                               dtype=bool, count=frame.size)
        if isinstance(cond, Proximity):
            return self._near(cond, frame)[0]
        if isinstance(cond, Not):
            return ~self._condition(cond.condition, frame)
        if isinstance(cond, InZone):
            zone = frame.zones[cond.layer]
            inside = zone >= 0
            if cond.zones is not None:
                inside &= self._zone_sets[id(cond)][np.maximum(zone, 0)]
            return ~inside if cond.outside else inside
        if isinstance(cond, AllOf):
            mask = np.ones(frame.size, dtype=bool)
            for sub in cond.conditions:
                mask &= self._condition(sub, frame)
            return mask
        if isinstance(cond, AnyOf):
            mask = np.zeros(frame.size, dtype=bool)
            for sub in cond.conditions:
                mask |= self._condition(sub, frame)
            return mask
        raise TypeError(f"unknown condition {cond!r}")

    def _near(self, cond: Proximity, frame: EventFrame,
              ) -> tuple[Mask, NDArray[np.int64], NDArray[np.float64]]:
        """(within, nearest site index or -1, distance m) per event, once per frame."""
        key = ("proximity", cond.point, cond.sites, cond.within_m)
        if key not in frame.derived:
            if cond.point is not None:
                point_key = ("distance", cond.point)
                if point_key not in frame.derived:  # shared by every rule near this point
                    frame.derived[point_key] = distances_to_point(frame.lon, frame.lat,
                                                                  cond.point)
                dist = frame.derived[point_key]
                index = np.where(dist <= cond.within_m, 0, -1)
            else:
                assert cond.sites is not None
                index, dist = self.sites[cond.sites].nearest_within(frame.lon, frame.lat,
                                                                    cond.within_m)
            with np.errstate(invalid="ignore"):
                frame.derived[key] = (dist <= cond.within_m, index, dist)
        return frame.derived[key]

    def _alert(self, rule: Rule, frame: EventFrame, i: int, raised_at: datetime) -> Alert:
        event = frame.events[i]
        layer_name = rule.incident_layer
        zone_id = zone_name = None
        if layer_name is not None:
            z = int(frame.zones[layer_name][i])
            if z >= 0:
                layer: ZoneLayer = self.zones.layers[layer_name]
                zone_id, zone_name = layer.zone_ids[z], layer.zone_names[z]
        version = self._versions[rule.id]
        values = _TemplateValues(event.attributes)
        values.update(entity_id=event.entity_id, zone=zone_name or "-", kind=event.kind)
        fields = self._fields[rule.id]
        if "time" in fields:
            values["time"] = event.time.isoformat()
        near = self._proximity[rule.id]
        circle = None
        if near is not None:
            _, index, dist = self._near(near, frame)
            if near.point is not None:
                circle = (near.point[0], near.point[1], near.within_m)
            elif near.sites and index[i] >= 0:
                layer = self.sites[near.sites]
                circle = (float(layer.lons[index[i]]), float(layer.lats[index[i]]),
                          near.within_m)
            if fields & {"site", "distance_km"}:
                values["distance_km"] = round(float(dist[i]) / 1000, 1)
                values["site"] = (self.sites[near.sites].site_names[index[i]]
                                  if near.sites and index[i] >= 0 else "the point")
        return Alert(
            id=alert_id(rule.id, version, event.entity_id, event.time),
            rule_id=rule.id, rule_version=version, domain=event.domain, kind=event.kind,
            severity=rule.alert.severity, urgency=rule.alert.urgency,
            certainty=rule.alert.certainty, category=rule.alert.category,
            event=rule.alert.event or rule.description or rule.id,
            message=_render(rule.alert.message, values),
            entity_id=event.entity_id, event_time=event.time, raised_at=raised_at,
            source_event_ids=[event.id], zone_layer=layer_name, zone_id=zone_id,
            zone_name=zone_name, geometry=event.geometry, attributes=event.attributes,
            area_circle=circle)


def _render(template: str, values: _TemplateValues) -> str:
    try:
        return template.format_map(values)
    except (ValueError, IndexError, AttributeError):  # e.g. '{x:.1f}' on a missing value
        return template


def build_zone_index(ruleset: RuleSet) -> ZoneIndex:
    """Load every zone layer a rule set declares."""
    return ZoneIndex([ZoneLayer.from_file(z.layer, z.path, name_field=z.name_field,
                                          id_field=z.id_field) for z in ruleset.zones])
