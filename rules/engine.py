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
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from string import Formatter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from citywatch.forecasts.grid import ForecastBook
from citywatch.geo.sites import SiteLayer, distances_to_point
from citywatch.geo.zones import ZoneIndex, ZoneLayer
from citywatch.rules.forecast_kinds import score_anomaly, score_exceedance
from citywatch.rules.frame import EventFrame
from citywatch.rules.identity import alert_id, dedupe_key, event_key, group_key
from citywatch.rules.keyed import ZoneRouter, zone_keyed
from citywatch.rules.model import (
    Absence,
    AllOf,
    Anomaly,
    AnyOf,
    Condition,
    Correlate,
    ForecastExceedance,
    Geofence,
    InZone,
    Match,
    Not,
    Persistence,
    Proximity,
    RateOfChange,
    Rule,
    RuleSet,
    Threshold,
    Window,
)
from citywatch.rules.state import FrameState, MemoryState, StateStore
from citywatch.rules.stateful import (
    AbsenceRoster,
    Context,
    Gate,
    LateEvent,
    Outcome,
    close_windows,
    run_absence,
    run_correlate,
    run_geofence,
    run_persistence,
    run_rate_of_change,
    run_window,
)
from citywatch.streams.alert import Alert
from citywatch.streams.batch import ColumnFrame
from citywatch.streams.envelope import Envelope

Mask = NDArray[np.bool_]
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}


class _TemplateValues(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


@dataclass
class Evaluation:
    """What one batch produced: alerts, events stateful rules could not use (late, which
    the caller must report: the worker dead-letters them), and the state changes, which
    the caller commits once the alerts are safely sent."""

    alerts: list[Alert]
    late: list[tuple[Envelope, str, str]] = field(default_factory=list)  # event, rule, why
    state: FrameState | None = None
    # rows zone-keyed rules read, per owning partition (an engine of part "entity")
    routes: dict[int, list[int]] = field(default_factory=dict)

    def commit_state(self) -> None:
        if self.state is not None:
            self.state.commit()


@dataclass
class _Derived:
    """Indexes rebuilt from the state on first use: the absence roster, seen ids by
    hour, zone-window groups waiting for the stream time."""

    roster: AbsenceRoster = field(default_factory=AbsenceRoster)
    seen_index: dict[int, list[str]] | None = None
    blocked: dict[str, set[str]] = field(default_factory=dict)


class RuleEngine:
    """Evaluates every enabled rule of a rule set on a batch at once.

    ``evaluate`` never raises on valid envelopes: an event missing an attribute or a
    location simply does not match conditions that need it. Stateful rules keep their
    state in ``state`` (a dict by default; the worker passes a changelog-backed table and
    the frame's stream offset to :meth:`process`).

    ``part`` splits a rule set over the worker's two stages (:meth:`split`): ``"entity"``
    evaluates every rule but the zone-keyed ones and says where their rows go
    (:attr:`Evaluation.routes`), ``"zone"`` evaluates only those, on the zones its
    partition owns; ``"all"`` (dry runs, backtests) evaluates everything at once.
    """

    def __init__(self, ruleset: RuleSet, zones: ZoneIndex,
                 sites: dict[str, SiteLayer] | None = None,
                 state: StateStore | None = None,
                 forecasts: ForecastBook | None = None, *, part: str = "all",
                 partitions: int = 1, repeated_ids: Collection[str] | None = None) -> None:
        self.ruleset = ruleset
        self.forecasts = forecasts if forecasts is not None else ForecastBook()
        self.zones = zones
        self.sites = sites or {}
        self.state: StateStore = state if state is not None else MemoryState()
        self.rules = [r for r in ruleset.rules if r.enabled]
        self.part = part
        self.stateless = [r for r in self.rules if not r.stateful] if part != "zone" else []
        self.stateful = [r for r in self.rules if r.stateful and (
            part == "all" or (part == "zone") == zone_keyed(r))]
        self.router = ZoneRouter(self.rules if part != "all" else [], zones, partitions)
        self._shard = -1
        self._versions = {r.id: r.version for r in self.rules}
        self._zone_sets = {
            id(c): np.array([n in set(c.zones) for n in zones.layers[c.layer].zone_names])
            for r in self.rules for c in r.conditions()
            if isinstance(c, InZone | Geofence) and c.zones is not None
        }
        self._proximity = {r.id: next((c for c in r.conditions()
                                       if isinstance(c, Proximity)), None)
                           for r in self.rules}
        self._fields = {r.id: {f for _, f, _, _ in Formatter().parse(r.alert.message) if f}
                        for r in self.rules}
        self._gates = {r.id: Gate(r.alert) for r in self.stateful}
        self._tests: dict[tuple[int, bool], Callable[[EventFrame], Mask]] = {}
        self._derived: dict[Any, _Derived] = {}  # per state scope (worker partition)
        self.seen_horizon = seen_horizon(self.stateful)
        # the only ids that can arrive more than once, when the caller knows its whole
        # input (a backtest); None: any id can (a worker)
        self.repeated_ids = repeated_ids
        self._stateful_domains = sorted({d for r in self.stateful for d in _domains(r)})
        self._position = 0
        self.late_counts: Counter[str] = Counter()

    def state_recovered(self) -> None:
        """The state store gained recovered state (a partition assigned since): drop the
        indexes derived from it (absence roster, seen ids), rebuilt on next use."""
        self._derived.clear()

    def _here(self) -> _Derived:
        """What is derived from the state in use (a worker keeps one per partition)."""
        scope = getattr(self.state, "scope", None)
        found = self._derived.get(scope)
        if found is None:
            found = self._derived[scope] = _Derived()
        return found

    def split(self, zone_state: StateStore, partitions: int) -> tuple[RuleEngine, RuleEngine]:
        """This rule set as the worker's two stages over ``partitions`` partitions: the
        entity stage (state in this engine's store) and the zone stage (``zone_state``)."""
        def part(name: str, state: StateStore) -> RuleEngine:
            return RuleEngine(self.ruleset, self.zones, self.sites, state, self.forecasts,
                              part=name, partitions=partitions)
        return part("entity", self.state), part("zone", zone_state)

    @property
    def has_rules(self) -> bool:
        """Whether this engine (or stage) evaluates any rule."""
        return bool(self.stateless or self.stateful)

    @property
    def version(self) -> str:
        """The version of the rule set this engine evaluates."""
        return self.ruleset.version

    @classmethod
    def from_ruleset(cls, ruleset: RuleSet, state: StateStore | None = None,
                     forecasts: ForecastBook | None = None, *,
                     repeated_ids: Collection[str] | None = None,
                     zones: ZoneIndex | None = None) -> RuleEngine:
        """An engine with the rule set's zone and site layers loaded from their files
        (``zones``: its zone layers, already loaded)."""
        sites = {s.layer: SiteLayer.from_file(s.layer, s.path, name_field=s.name_field,
                                               crs=s.crs)
                 for s in ruleset.sites}
        return cls(ruleset, zones if zones is not None else build_zone_index(ruleset), sites,
                   state, forecasts, repeated_ids=repeated_ids)

    def evaluate(self, events: Sequence[Envelope]) -> list[Alert]:
        """Alerts for one batch (state, if any, kept in the engine's own store)."""
        result = self.process(events)
        result.commit_state()
        return result.alerts

    def process(self, events: Sequence[Envelope] | ColumnFrame, position: int | None = None,
                origins: tuple[Sequence[str], Sequence[int]] | None = None,
                envelopes: Sequence[Envelope] | None = None, *, shard: int = -1,
                stream_time: tuple[float, float] | None = None) -> Evaluation:
        """Alerts and late events for one batch read at stream ``position`` (a frame
        replayed at the same position leaves already-updated state alone).

        ``origins`` — each event's raw ``topic/partition`` and offset — lets stateful rules
        skip events they already applied that reach them again in a new frame (ingest
        re-reading raw records after a crash). ``envelopes``: the events of a
        ``ColumnFrame`` built from them (a backtest builds each frame once for two rule
        sets).

        A zone-stage engine evaluates the zones partition ``shard`` owns, with
        ``stream_time`` the time every partition feeding it had reached before this
        frame and has reached with it: a zone window closes, and an event is late, only
        once all of them have passed it."""
        self._shard = shard
        if position is None:
            self._position += 1
            position = self._position
        result = Evaluation([])
        if isinstance(events, ColumnFrame):
            frame = EventFrame(events, self.zones, envelopes)
            if origins is None and events.origins:
                origins = (events.origins, events.offsets)
        else:
            frame = EventFrame.from_envelopes(events, self.zones)
        if not frame.size and stream_time is None:
            return result  # (an empty zone-stage frame still moves the stream time)
        raised_at = datetime.now(UTC)
        for rule in self.stateless:
            mask = self._eligible(rule, frame)
            if not mask.any():
                continue
            mask = mask & self._condition(rule.condition, frame)
            if not mask.any():
                continue
            template = rule.alert.dedupe_key
            for i in np.flatnonzero(mask).tolist():
                key = (None if template is None
                       else self._render_key(rule, frame, i, template, None))
                result.alerts.append(self._alert(rule, frame, i, raised_at, dedupe=key))
        if self.stateful:
            state = result.state = FrameState(self.state, position)
            frame.derived["fresh"] = (self._fresh(state, frame.size, origins)
                                      & self._unseen(state, frame, stream_time))
            late: list[LateEvent] = []
            for rule in self.stateful:
                ctx = Context(frame, state, self._prefix(rule), rule.id, late,
                              stream_time[0] if stream_time else None,
                              self._blocked_groups(rule))
                outcomes = self._outcomes(rule, ctx)
                if stream_time is not None and isinstance(rule.condition, Window):
                    ctx.stream_time = stream_time[1]
                    outcomes.extend(self._close_blocked(rule, ctx))
                result.alerts.extend(self._gated_alerts(rule, ctx, outcomes, raised_at))
            for item in late:
                self.late_counts[item.rule_id] += 1
                result.late.append((frame.event(item.index), item.rule_id, item.reason))
        if self.part == "entity" and self.router.rules:
            result.routes = self.router.routes(frame, lambda domain, kinds: self._reads(
                domain, kinds, frame))
        return result

    def _reads(self, domain: str, kinds: Sequence[str] | None, frame: EventFrame) -> Mask:
        mask = frame.domain_is(domain)
        return mask & frame.kind_in(kinds) if kinds else mask

    def _blocked_groups(self, rule: Rule) -> set[str]:
        """Zone-window groups with windows their zone's time has passed but not every
        partition's yet (zone stage; rebuilt from the state after a recovery)."""
        blocked = self._here().blocked
        found = blocked.get(rule.id)
        if found is None:
            found = blocked[rule.id] = set()
            cond = rule.condition
            if self.part == "zone" and isinstance(cond, Window):
                prefix = self._prefix(rule)
                for key, st in self.state.items_with_prefix(prefix):
                    value = st[1] if isinstance(st, list) and len(st) == 2 else None
                    if "|gate|" not in key and isinstance(value, dict) and any(
                            float(s) + cond.size + cond.allowed_lateness <= value["wm"]
                            for s in value.get("w", {})):
                        found.add(key)
        return found

    def _close_blocked(self, rule: Rule, ctx: Context) -> list[Outcome]:
        """Close the windows every partition's time has now passed (zone stage)."""
        cond = rule.condition
        assert isinstance(cond, Window)
        names, ids = self._layer_names(cond.zone_layer)
        outcomes: list[Outcome] = []
        for key in sorted(ctx.blocked):
            fresh, st = ctx.state.load(key)
            if not fresh:  # a frame read again after a crash: the group keeps waiting
                continue
            if not st:
                ctx.blocked.discard(key)
                continue
            closed = close_windows(cond, st, key[len(ctx.prefix):], names, ids,
                                   stream_time=ctx.stream_time)
            if closed:
                outcomes.extend(closed)
                ctx.state.save(key, st)
            if not any(float(s) + cond.size + cond.allowed_lateness <= st["wm"]
                       for s in st["w"]):
                ctx.blocked.discard(key)
        return outcomes

    def flush(self) -> list[Alert]:
        """End of input (dry runs, backtests): close every open window and score it."""
        self._position += 1
        state = FrameState(self.state, self._position)
        frame = EventFrame.from_envelopes([], self.zones)
        alerts: list[Alert] = []
        for rule in self.stateful:
            cond = rule.condition
            if not isinstance(cond, Window):
                continue
            ctx = Context(frame, state, self._prefix(rule), rule.id, [])
            names, ids = self._layer_names(cond.zone_layer)
            outcomes: list[Outcome] = []
            for key, st in list(state.values_with_prefix(ctx.prefix)):
                if "|gate|" in key or not st["w"]:
                    continue
                outcomes.extend(close_windows(cond, st, key[len(ctx.prefix):], names, ids,
                                              everything=True))
                state.save(key, st)
            alerts.extend(self._gated_alerts(rule, ctx, outcomes, datetime.now(UTC)))
        state.commit()
        return alerts

    @staticmethod
    def _fresh(state: FrameState, size: int,
               origins: tuple[Sequence[str], Sequence[int]] | None) -> Mask:
        """Events not yet applied to the state: raw offset beyond the highest applied."""
        fresh = np.ones(size, dtype=bool)
        if not origins or len(origins[0]) != size:
            return fresh
        names, offsets = origins
        for origin in set(names):
            key = f"~origin|{origin}"
            is_new, applied = state.load(key)
            rows = [i for i, name in enumerate(names) if name == origin]
            if not is_new:
                fresh[rows] = False
                continue
            highest = -1 if applied is None else applied
            for i in rows:
                fresh[i] = offsets[i] > highest
            state.save(key, max(highest, *(offsets[i] for i in rows)))
        return fresh

    def _unseen(self, state: FrameState, frame: EventFrame,
                stream_time: tuple[float, float] | None = None) -> Mask:
        """Events whose id stateful rules have not applied yet: a replayed event (a feed
        read again from the start, a producer retry) is applied at most once.

        Ids are kept for :attr:`seen_horizon` seconds of event time behind the newest
        event seen (behind the stream time every partition has reached, in the zone
        stage), then forgotten: an event older than that is beyond every stateful
        rule's lifetime (late for windows, older than the entity's last for sequences).
        """
        unseen = np.ones(frame.size, dtype=bool)
        relevant = np.zeros(frame.size, dtype=bool)  # only what stateful rules read
        for domain in self._stateful_domains:
            relevant |= frame.domain_is(domain)
        if not relevant.any():
            return unseen
        times = frame.time_list
        clock_is_new, clock = state.load(_SEEN_CLOCK)
        newest = clock if clock is not None else -np.inf
        buckets = self._seen_buckets(state)
        ids = frame.ids
        repeated = self.repeated_ids
        for i in np.flatnonzero(relevant).tolist():
            if repeated is not None and ids[i] not in repeated:
                # an id that arrives only once is unseen on its one arrival: nothing
                # to remember (same outcome as the bookkeeping, without its cost)
                if times[i] > newest:
                    newest = times[i]
                continue
            key = f"{_SEEN}{ids[i]}"
            is_new, seen = state.load(key)
            if not is_new or seen is not None:
                unseen[i] = False
                continue
            t = times[i]
            state.save(key, t)
            buckets.setdefault(int(t // 3600), []).append(key)
            newest = max(newest, t)
        if clock_is_new and np.isfinite(newest) and newest != clock:
            state.save(_SEEN_CLOCK, newest)
            reached = newest if stream_time is None else min(newest, stream_time[0])
            if not np.isfinite(reached):
                return unseen
            cutoff = int((reached - self.seen_horizon) // 3600)
            for bucket in [b for b in buckets if b < cutoff]:
                for key in buckets.pop(bucket):
                    state.delete(key)
        return unseen

    def _seen_buckets(self, state: FrameState) -> dict[int, list[str]]:
        """Seen ids by hour of event time (rebuilt from the state after a restart)."""
        here = self._here()
        if here.seen_index is None:
            here.seen_index = {}
            for key, t in state.values_with_prefix(_SEEN):
                if key != _SEEN_CLOCK and t is not None:
                    here.seen_index.setdefault(int(t // 3600), []).append(key)
        return here.seen_index

    def _prefix(self, rule: Rule) -> str:
        return f"{rule.id}@{self._versions[rule.id]}|"

    def _layer_names(self, layer: str | None) -> tuple[list[str] | None, list[str] | None]:
        if layer is None:
            return None, None
        zl = self.zones.layers[layer]
        return zl.zone_names, zl.zone_ids

    def _eligible(self, rule: Rule, frame: EventFrame) -> Mask:
        mask = frame.domain_is(rule.domain)
        if rule.kinds:
            mask = mask & frame.kind_in(rule.kinds)
        return mask

    def _rows(self, mask: Mask, where: Condition | None, frame: EventFrame) -> list[int]:
        if where is not None and mask.any():
            mask = mask & self._condition(where, frame)
        return np.flatnonzero(mask).tolist()

    def _outcomes(self, rule: Rule, ctx: Context) -> list[Outcome]:
        frame, cond = ctx.frame, rule.condition
        if isinstance(cond, Correlate):
            return self._correlate(cond, ctx)
        eligible = self._eligible(rule, frame) & frame.derived["fresh"]
        if not eligible.any():
            return run_absence(cond, ctx, [], self._here().roster) if isinstance(
                cond, Absence) else []
        if isinstance(cond, Window):
            names, ids = self._layer_names(cond.zone_layer)
            if self.part == "zone" and cond.zone_layer is not None:
                eligible = eligible & self.router.owned(
                    cond.zone_layer, frame.zones[cond.zone_layer], self._shard)
            return run_window(cond, ctx, self._rows(eligible, cond.where, frame), names, ids)
        if isinstance(cond, RateOfChange):
            return run_rate_of_change(cond, ctx, self._rows(eligible, cond.where, frame),
                                      misses=self._gates[rule.id].until_clear)
        if isinstance(cond, Persistence):
            return run_persistence(ctx, self._rows(eligible, None, frame),
                                   self._condition(cond.condition, frame),
                                   count=cond.count, duration=cond.duration)
        if isinstance(cond, Absence):
            return run_absence(cond, ctx, self._rows(eligible, cond.where, frame),
                               self._here().roster)
        if isinstance(cond, ForecastExceedance | Anomaly):
            if cond.entity is not None:
                eligible = eligible & frame.entity_is(cond.entity)
            rows = self._rows(eligible, cond.where, frame)
            grid = self.forecasts.get(cond.series)
            if grid is None or not rows:
                return []
            if isinstance(cond, Anomaly):
                return score_anomaly(cond, ctx, rows, grid)
            return score_exceedance(cond, ctx, rows, grid)
        if isinstance(cond, Geofence):
            layer = self.zones.layers[cond.layer]
            located = eligible & _located(frame)  # unknown place: no transition either way
            return run_geofence(cond, ctx, self._rows(located, None, frame),
                                frame.zones[cond.layer], self._zone_sets.get(id(cond)),
                                layer.zone_names, layer.zone_ids)
        holds = self._condition(cond, frame)  # a stateless condition behind a gate
        gate = self._gates[rule.id]
        rows = eligible if gate.until_clear else eligible & holds
        times = frame.time_list
        return [Outcome(time=times[i], hit=bool(holds[i]),
                        group=frame.entity_ids[i], index=i)
                for i in np.flatnonzero(rows).tolist()]

    def _correlate(self, cond: Correlate, ctx: Context) -> list[Outcome]:
        frame = ctx.frame
        layer = self.zones.layers[cond.layer]
        masks = []
        for side in (cond.first, cond.second):
            mask = frame.domain_is(side.domain) & frame.derived["fresh"]
            if side.kinds:
                mask &= frame.kind_in(side.kinds)
            if side.condition is not None and mask.any():
                mask &= self._condition(side.condition, frame)
            masks.append(mask)
        sides: list[tuple[int, int, int]] = []
        zone_col = frame.zones[cond.layer]
        for i in np.flatnonzero(masks[0] | masks[1]).tolist():
            for s, side in enumerate((cond.first, cond.second)):
                if not masks[s][i] or np.isnan(frame.lon[i]):
                    continue
                zones = ([int(zone_col[i])] if zone_col[i] >= 0 else []) if not side.near_m \
                    else layer.zones_within(float(frame.lon[i]), float(frame.lat[i]),
                                            side.near_m)
                sides.extend((i, s, z) for z in zones)
        if self.part == "zone":
            owners = self.router.owners(cond.layer)
            sides = [side for side in sides if owners[side[2]] == self._shard]
        return run_correlate(cond, ctx, sides, layer.zone_names, layer.zone_ids)

    def _gated_alerts(self, rule: Rule, ctx: Context, outcomes: list[Outcome],
                      raised_at: datetime) -> list[Alert]:
        if not outcomes:
            return []
        frame = ctx.frame
        template = rule.alert.dedupe_key
        keyed = []
        for o in outcomes:
            key = (o.group if template is None
                   else self._render_key(rule, frame, o.index, template, o))
            keyed.append((key, o))
        cleared = (self._condition(rule.alert.clear_when, frame)
                   if rule.alert.clear_when is not None and frame.size else None)
        passed = self._gates[rule.id].pass_hits(ctx, keyed, cleared)
        keys = {id(o): k for k, o in keyed}
        return [self._alert(rule, frame, o.index, raised_at, o,
                            keys[id(o)] if template is not None else None)
                if o.index >= 0 else self._group_alert(rule, o, raised_at, keys[id(o)]
                                                       if template is not None else None,
                                                       frame)
                for o in passed]

    def _render_key(self, rule: Rule, frame: EventFrame, i: int, template: str,
                    o: Outcome | None) -> str:
        """A rule's ``dedupe_key`` rendered for row ``i`` (or for a group outcome)."""
        values = _TemplateValues(frame.event(i).attributes if i >= 0 else {})
        if o is not None:
            values.update(o.values, entity_id=o.group,
                          zone=o.zone[1] if o.zone else o.values.get("zone", "-"))
        if i >= 0:
            when = frame.event(i).time
            values.update(entity_id=frame.entity_ids[i], kind=frame.event(i).kind,
                          zone=self._zone_of(rule, frame, i)[1] or "-",
                          date=when.date().isoformat(), time=when.isoformat())
        return _render(template, values)

    def _condition(self, cond: Condition, frame: EventFrame) -> Mask:
        """Where the condition is known to hold (a function compiled once per condition).

        Conditions are three-valued: an event without the attribute a threshold or match
        reads, or without a location for a spatial test, makes that test *unknown*, not
        false — so ``not`` of it, and ``outside: true``, stay unknown and never alert.
        """
        return self._test(cond, False)(frame)

    def _test(self, cond: Condition, negated: bool) -> Callable[[EventFrame], Mask]:
        """Where ``cond`` is known true (``negated``: known false), compiled and cached."""
        test = self._tests.get((id(cond), negated))
        if test is None:
            test = self._tests[(id(cond), negated)] = self._compile(cond, negated)
        return test

    def _compile(self, cond: Condition, negated: bool) -> Callable[[EventFrame], Mask]:
        if isinstance(cond, Not):
            return self._test(cond.condition, not negated)
        if isinstance(cond, AllOf | AnyOf):
            # Kleene: all-of is known true where every part is, known false where any
            # part is; any-of the other way round
            subs = [self._test(c, negated) for c in cond.conditions]
            every = isinstance(cond, AllOf) != negated
            combine = np.logical_and if every else np.logical_or

            def folded(f: EventFrame) -> Mask:
                mask = subs[0](f)
                for sub in subs[1:]:
                    mask = combine(mask, sub(f))
                return mask
            return folded
        holds, known = self._leaf(cond)
        if negated:
            return lambda f: ~holds(f) & known(f)
        if _unknown_can_hold(cond):
            return lambda f: holds(f) & known(f)
        return holds  # NaN compares false, no zone or site matches nowhere: holds ⊆ known

    def _leaf(self, cond: Condition,
              ) -> tuple[Callable[[EventFrame], Mask], Callable[[EventFrame], Mask]]:
        """(holds, known) of a simple condition; ``holds`` may be anything where unknown."""
        if isinstance(cond, Threshold):
            attribute = cond.attribute
            known: Callable[[EventFrame], Mask] = lambda f: f.known(attribute)  # noqa: E731
            if cond.range is not None:
                low, high = cond.range
                if cond.op == "between":
                    return (lambda f: (f.column(attribute) >= low)
                            & (f.column(attribute) <= high)), known
                return (lambda f: (f.column(attribute) < low)
                        | (f.column(attribute) > high)), known
            compare, value = _OPS[cond.op], cond.value
            return (lambda f: compare(f.column(attribute), value)), known
        if isinstance(cond, Match):
            wanted, attribute = set(cond.values), cond.attribute
            return (lambda f: np.fromiter((v in wanted for v in f.text_column(attribute)),
                                          dtype=bool, count=f.size),
                    lambda f: np.fromiter((v is not None for v in f.text_column(attribute)),
                                          dtype=bool, count=f.size))
        if isinstance(cond, Proximity):
            return (lambda f: self._near(cond, f)[0]), _located
        if isinstance(cond, InZone):
            layer, outside = cond.layer, cond.outside
            named = self._zone_sets.get(id(cond))
            if named is None:
                return ((lambda f: f.zones[layer] < 0) if outside else (
                    lambda f: f.zones[layer] >= 0)), _located

            def in_named(f: EventFrame) -> Mask:
                zone = f.zones[layer]
                inside = (zone >= 0) & named[np.maximum(zone, 0)]
                return ~inside if outside else inside
            return in_named, _located
        raise TypeError(f"unknown condition {cond!r}")

    def _near(self, cond: Proximity, frame: EventFrame,
              ) -> tuple[Mask, NDArray[np.int64], NDArray[np.float64]]:
        """(within, nearest site index or -1, distance m) per event, once per frame."""
        def measure() -> tuple[Mask, NDArray[np.int64], NDArray[np.float64]]:
            if cond.point is not None:
                point = cond.point
                dist = frame.cached(("distance", point), lambda: frame.per_place(
                    distances_to_point(frame.place_lon, frame.place_lat, point)))
                index = np.where(dist <= cond.within_m, 0, -1)
            else:
                assert cond.sites is not None
                index, dist = self.sites[cond.sites].nearest_within(
                    frame.place_lon, frame.place_lat, cond.within_m)
                index, dist = frame.per_place(index), frame.per_place(dist)
            return dist <= cond.within_m, index, dist

        return frame.cached(("proximity", cond.point, cond.sites, cond.within_m), measure)

    def _zone_of(self, rule: Rule, frame: EventFrame, i: int,
                 ) -> tuple[str | None, str | None]:
        layer_name = rule.incident_layer
        if layer_name is not None:
            z = int(frame.zones[layer_name][i])
            if z >= 0:
                layer: ZoneLayer = self.zones.layers[layer_name]
                return layer.zone_ids[z], layer.zone_names[z]
        return None, None

    def _alert(self, rule: Rule, frame: EventFrame, i: int, raised_at: datetime,
               outcome: Outcome | None = None, dedupe: str | None = None) -> Alert:
        event = frame.event(i)
        layer_name = rule.incident_layer
        zone_id, zone_name = outcome.zone if outcome and outcome.zone else self._zone_of(
            rule, frame, i)
        version = self._versions[rule.id]
        values = _TemplateValues(event.attributes)
        values.update(entity_id=event.entity_id, zone=zone_name or "-", kind=event.kind)
        if outcome is not None:
            values.update(outcome.values)
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
        window = outcome.window if outcome is not None else ""
        sources = outcome.source_ids if outcome is not None and outcome.source_ids else [
            event.id]
        model = urgency = certainty = None
        episode = None
        if outcome is not None:
            if outcome.id_time is not None:
                episode = datetime.fromtimestamp(outcome.id_time, UTC)
            model, urgency, certainty = outcome.model, outcome.urgency, outcome.certainty
        if dedupe is not None:  # explicit: per key, or per episode when the rule is gated
            key = dedupe_key(dedupe, (episode or event.time) if rule.stateful else None,
                             window)
        elif episode is not None:  # a forecast crossing: one alert per entity and episode
            key = group_key(event.entity_id, episode, window)
        else:
            key = event_key(event.id, window)
        return Alert(
            id=alert_id(rule.id, version, key),
            rule_id=rule.id, rule_version=version, domain=event.domain, kind=event.kind,
            severity=rule.alert.severity, urgency=urgency or rule.alert.urgency,
            certainty=certainty or rule.alert.certainty, category=rule.alert.category,
            event=rule.alert.event or rule.description or rule.id,
            message=_render(rule.alert.message, values),
            entity_id=event.entity_id, event_time=event.time, raised_at=raised_at,
            expires_at=event.time + timedelta(seconds=rule.alert.valid_for),
            source_event_ids=sources, source_origins=[frame.origin(i)]
            if sources == [event.id] else frame.origins_of(
                sources, outcome.origins if outcome is not None else None),
            evaluation={k: v for k, v in outcome.values.items()
                        if isinstance(v, str | int | float | bool)} if outcome else {},
            zone_layer=layer_name,
            zone_id=zone_id, zone_name=zone_name, geometry=event.geometry,
            attributes=event.attributes, area_circle=circle,
            model_id=model[0] if model else None, model_version=model[1] if model else None)

    def _group_alert(self, rule: Rule, outcome: Outcome, raised_at: datetime,
                     dedupe: str | None, frame: EventFrame | None = None) -> Alert:
        """An alert about a group (closed window, silent sensor, correlation)."""
        version = self._versions[rule.id]
        event_time = datetime.fromtimestamp(outcome.time, UTC)
        zone_id, zone_name = outcome.zone or (None, None)
        values = _TemplateValues(outcome.values)
        values.update(entity_id=outcome.group, zone=zone_name or values.get("zone", "-"),
                      time=event_time.isoformat(), kind=rule.condition.type)
        attributes = {k: v for k, v in outcome.values.items()
                      if isinstance(v, str | int | float | bool)}
        return Alert(
            id=alert_id(rule.id, version,
                        dedupe_key(dedupe, event_time, outcome.window) if dedupe is not None
                        else group_key(outcome.group, event_time, outcome.window)),
            rule_id=rule.id, rule_version=version, domain=rule.domain,
            kind=f"rule.{rule.condition.type}", severity=rule.alert.severity,
            urgency=rule.alert.urgency, certainty=rule.alert.certainty,
            category=rule.alert.category,
            event=rule.alert.event or rule.description or rule.id,
            message=_render(rule.alert.message, values), entity_id=outcome.group,
            event_time=event_time, raised_at=raised_at,
            expires_at=event_time + timedelta(seconds=rule.alert.valid_for),
            source_event_ids=outcome.source_ids,
            source_origins=frame.origins_of(outcome.source_ids, outcome.origins)
            if frame is not None else [outcome.origins.get(e, "") for e in outcome.source_ids],
            zone_layer=rule.incident_layer if zone_id else None, zone_id=zone_id,
            zone_name=zone_name, geometry=outcome.geometry, attributes=attributes)


_SEEN = "~seen|"
_SEEN_CLOCK = "~seen|~clock"


def seen_horizon(rules: Sequence[Rule]) -> float:
    """How long (event time) applied event ids are remembered: the longest lifetime of
    any stateful rule's state — window size + allowed lateness, correlation span,
    persistence duration, absence gap, cooldown — and at least one day."""
    spans = [86400.0]
    for rule in rules:
        cond = rule.condition
        for name in ("size", "within", "duration", "after"):
            value = getattr(cond, name, None)
            if isinstance(value, int | float):
                spans.append(float(value) + float(getattr(cond, "allowed_lateness", 0) or 0))
        if rule.alert.cooldown:
            spans.append(float(rule.alert.cooldown))
    return max(spans)


def _domains(rule: Rule) -> list[str]:
    """The domains a rule reads (both sides of a correlation)."""
    if isinstance(rule.condition, Correlate):
        return [rule.condition.first.domain, rule.condition.second.domain]
    return [rule.domain]


def _unknown_can_hold(cond: Condition) -> bool:
    """Whether a simple condition's raw test can be true where its inputs are missing."""
    return (isinstance(cond, Threshold) and cond.op == "!=") or (
        isinstance(cond, InZone) and cond.outside)


def _located(frame: EventFrame) -> Mask:
    """Where events have a location (spatial tests are unknown elsewhere)."""
    return frame.cached("located", lambda: ~np.isnan(frame.lon))


def _render(template: str, values: _TemplateValues) -> str:
    try:
        return template.format_map(values)
    except (ValueError, IndexError, AttributeError):  # e.g. '{x:.1f}' on a missing value
        return template


def build_zone_index(ruleset: RuleSet) -> ZoneIndex:
    """Load every zone layer a rule set declares."""
    return ZoneIndex([ZoneLayer.from_file(z.layer, z.path, name_field=z.name_field,
                                          id_field=z.id_field, crs=z.crs)
                      for z in ruleset.zones])
