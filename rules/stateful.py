"""Stateful rule kinds: windows, rate of change, persistence, absence, geofence, correlate,
and the cooldown / hysteresis gate in front of every stateful rule's alerts.

Each kind reads the frame's eligible events **in arrival order**, one state key per group
(entity or zone), so the result does not depend on how events were cut into frames — a
worker restarted mid-stream reaches the same state and raises the same alerts. Every
kind turns events into :class:`Outcome` values (the condition held or not, at an event
time); the :class:`Gate` then decides which hits become alerts.

Example:
    >>> from citywatch.rules.model import Window
    >>> w = Window.model_validate({"type": "window", "attribute": "pm25",
    ...     "aggregate": "avg", "size": "1h", "op": ">", "value": 30})
    >>> window_starts(w, 5400.0)       # tumbling: the one window holding 01:30
    [3600.0]
    >>> window_starts(w.model_copy(update={"slide": 1800.0}), 5400.0)
    [3600.0, 5400.0]
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from citywatch.rules.frame import EventFrame
from citywatch.rules.model import (
    Absence,
    AlertSpec,
    Correlate,
    Geofence,
    RateOfChange,
    Window,
)
from citywatch.rules.state import FrameState

COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne,
}


ORIGINS_KEPT = 3
"""Origins (file:line, topic position) a window keeps for its first source events."""


@dataclass(slots=True)
class Outcome:
    """Whether a stateful condition held for a group at ``time`` (epoch seconds).

    ``index`` is the frame row of the event that decided it, or -1 when the outcome
    belongs to a group (a closed window, a silent sensor, a correlation).
    """

    time: float
    hit: bool
    group: str
    index: int = -1
    window: str = ""
    values: dict[str, Any] = field(default_factory=dict)
    source_ids: list[str] = field(default_factory=list)
    geometry: dict[str, Any] | None = None
    zone: tuple[str, str] | None = None  # (zone id, zone name) for group outcomes
    id_time: float | None = None  # the time the alert id is built on, if not the event's
    model: tuple[str, str] | None = None  # (model id, version) of a forecast rule
    urgency: str | None = None  # CAP urgency/certainty decided by the outcome
    certainty: str | None = None
    origins: dict[str, str] = field(default_factory=dict)  # source id -> where it came from


@dataclass(slots=True)
class LateEvent:
    """An event a stateful rule could not use because its time had passed."""

    index: int
    rule_id: str
    reason: str


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def window_starts(cond: Window, t: float) -> list[float]:
    """Starts of the windows (aligned to the epoch) that contain event time ``t``."""
    slide = cond.slide or cond.size
    last = math.floor(t / slide) * slide
    count = int(round(cond.size / slide))
    return [last - k * slide for k in range(count - 1, -1, -1) if last - k * slide + cond.size > t]


def _aggregate(name: str, acc: list[Any]) -> float:
    """``acc`` is ``[count, sum, min, max, values (p95 only), event ids]``."""
    count, total, low, high, values = acc[0], acc[1], acc[2], acc[3], acc[4]
    if name == "count":
        return float(count)
    if low is None:  # no numeric value in the window
        return math.nan
    if name == "sum":
        return total
    if name == "avg":
        return total / count
    if name == "min":
        return low
    if name == "max":
        return high
    return float(np.percentile(values, 95))


def group_rows(rows: Iterable[int], keys: Callable[[int], str | None] | Sequence[str],
               ) -> dict[str, list[int]]:
    """Rows by group key (a function of the row, or each row's key), each group in
    arrival order; rows without a key are left out."""
    groups: dict[str, list[int]] = {}
    if not callable(keys):  # every row has its key: no call per row
        for i in rows:
            found = groups.get(keys[i])
            if found is None:
                groups[keys[i]] = [i]
            else:
                found.append(i)
        return groups
    for i in rows:
        key = keys(i)
        if key is not None:
            groups.setdefault(key, []).append(i)
    return groups


class Context:
    """What a stateful kind needs for one frame: the frame, the state, where late events
    go, and the zone names of the layers.

    ``stream_time`` (zone stage of a worker over several partitions) is the time every
    partition feeding the zone has reached: zone windows close, and events are late, by
    the earlier of it and the zone's own time; ``blocked`` collects the groups whose
    windows wait for it.
    """

    def __init__(self, frame: EventFrame, state: FrameState, prefix: str, rule_id: str,
                 late: list[LateEvent], stream_time: float | None = None,
                 blocked: set[str] | None = None) -> None:
        self.frame = frame
        self.state = state
        self.prefix = prefix
        self.rule_id = rule_id
        self.late = late
        self.stream_time = stream_time
        self.blocked = blocked if blocked is not None else set()

    def effective(self, own: float | None) -> float | None:
        """A group's time for lateness and closing: its own, held back to the stream
        time when one is given."""
        if own is None or self.stream_time is None:
            return own
        return min(own, self.stream_time)

    def groups(self, rows: Iterable[int], key_of: Callable[[int], str | None] | None = None,
               ) -> Iterator[tuple[str, list[int], str, Any]]:
        """``(group, its rows, state key, state)`` for each group of ``rows`` (by entity
        unless ``key_of`` says otherwise) that this frame has not already applied."""
        for group, idx in group_rows(rows, key_of or self.frame.entity_ids).items():
            key = f"{self.prefix}{group}"
            fresh, st = self.state.load(key)
            if fresh:
                yield group, idx, key, st

    def mark_late(self, index: int, reason: str) -> None:
        self.late.append(LateEvent(index, self.rule_id, reason))

    def entity(self, i: int) -> str:
        return self.frame.entity_ids[i]


def run_window(cond: Window, ctx: Context, rows: list[int],
               zone_names: list[str] | None, zone_ids: list[str] | None) -> list[Outcome]:
    """Add the rows to their groups' windows; close and score every window whose end
    plus ``allowed_lateness`` the group's latest event time has passed."""
    frame = ctx.frame
    times = frame.time_list
    values = frame.column_list(cond.attribute)
    zone_col = frame.zones[cond.zone_layer] if cond.zone_layer else None

    def key_of(i: int) -> str | None:
        if zone_col is None:
            return ctx.entity(i)
        return str(zone_col[i]) if zone_col[i] >= 0 else None

    outcomes: list[Outcome] = []
    for group, idx, key, st in ctx.groups(rows, key_of):
        st = st or {"wm": None, "w": {}, "g": None}
        for i in idx:
            v = values[i]
            if math.isnan(v) and cond.aggregate != "count":
                continue
            t = times[i]
            wm = ctx.effective(st["wm"])
            starts = [s for s in window_starts(cond, t)
                      if wm is None or s + cond.size + cond.allowed_lateness > wm]
            if not starts:
                ctx.mark_late(i, f"event time {iso(t)} is behind the stream time {iso(wm)} "
                                 f"by more than allowed_lateness {cond.allowed_lateness:g}s; "
                                 "its window has closed")
                continue
            for s in starts:
                acc = st["w"].setdefault(repr(s), [0, 0.0, None, None, [], []])
                acc[0] += 1
                if not math.isnan(v):
                    acc[1] += v
                    acc[2] = v if acc[2] is None else min(acc[2], v)
                    acc[3] = v if acc[3] is None else max(acc[3], v)
                    if cond.aggregate == "p95":
                        acc[4].append(v)
                acc[5].append(frame.ids[i])
                if len(acc) < 7:
                    acc.append({})
                if len(acc[6]) < ORIGINS_KEPT:
                    acc[6][frame.ids[i]] = frame.origin(i)
            if zone_col is None:
                st["g"] = frame.event(i).geometry
            st["wm"] = t if st["wm"] is None else max(st["wm"], t)
            outcomes.extend(close_windows(cond, st, group, zone_names, zone_ids,
                                          stream_time=ctx.stream_time))
        if ctx.stream_time is not None and st["wm"] is not None and any(
                float(s) + cond.size + cond.allowed_lateness <= st["wm"] for s in st["w"]):
            ctx.blocked.add(key)
        ctx.state.save(key, st)
    return outcomes


def close_windows(cond: Window, st: dict[str, Any], group: str,
                  zone_names: list[str] | None, zone_ids: list[str] | None,
                  everything: bool = False, stream_time: float | None = None,
                  ) -> list[Outcome]:
    """Score and drop the group's windows that are closed (all of them at end of input);
    with ``stream_time``, only those it has passed too."""
    out: list[Outcome] = []
    wm = st["wm"] if stream_time is None else min(st["wm"], stream_time)
    for start_text in sorted(st["w"], key=float):
        start = float(start_text)
        end = start + cond.size
        if not everything and end + cond.allowed_lateness > wm:
            continue
        acc = st["w"].pop(start_text)
        count = acc[0]
        agg = _aggregate(cond.aggregate, acc) if count else math.nan
        hit = count >= cond.min_events and not math.isnan(agg) and COMPARE[cond.op](
            agg, cond.value)
        zone = None
        name = group
        if zone_names is not None and zone_ids is not None:
            z = int(group)
            zone, name = (zone_ids[z], zone_names[z]), zone_names[z]
        shown = round(agg, 2) if not math.isnan(agg) else agg
        out.append(Outcome(
            time=end, hit=hit, group=name, window=f"{iso(start)}/{cond.size:g}",
            values={"aggregate": cond.aggregate, "attribute": cond.attribute,
                    "value": shown, "count": count, "window_start": iso(start),
                    "window_end": iso(end)},
            source_ids=list(acc[5]), geometry=st["g"], zone=zone,
            origins=dict(acc[6]) if len(acc) > 6 else {}))
    return out


def run_rate_of_change(cond: RateOfChange, ctx: Context, rows: list[int], *,
                       misses: bool = True) -> list[Outcome]:
    """Change per ``per`` seconds between an entity's consecutive events; ``misses``:
    whether outcomes where the change does not meet the condition are wanted (only a
    gate with ``until_clear`` reads them)."""
    frame = ctx.frame
    times, values, ids = frame.time_list, frame.column_list(cond.attribute), frame.ids
    compare, limit, per = COMPARE[cond.op], cond.value, cond.per
    outcomes: list[Outcome] = []
    for entity, idx, key, st in ctx.groups(rows):
        last_t, last_v, last_id = (st["t"], st["v"], st["id"]) if st is not None \
            else (None, math.nan, "")
        for i in idx:
            t, v = times[i], values[i]
            if v != v:  # NaN: no value
                continue
            if last_t is not None and t < last_t:
                ctx.mark_late(i, f"event time {iso(t)} is before the entity's previous "
                                 f"event at {iso(last_t)}")
                continue
            if last_t is not None and t > last_t:
                rate = (v - last_v) / (t - last_t) * per
                hit = compare(rate, limit)
                if hit or misses:
                    outcomes.append(Outcome(
                        time=t, hit=hit, group=entity, index=i,
                        values={"rate": round(rate, 3), "previous": last_v},
                        source_ids=[last_id, ids[i]]))
            last_t, last_v, last_id = t, v, ids[i]
        ctx.state.save(key, None if last_t is None else {"t": last_t, "v": last_v,
                                                          "id": last_id})
    return outcomes


def run_persistence(ctx: Context, rows: list[int], holds: np.ndarray, *,
                    count: int | None = None, duration: float | None = None,
                    ) -> list[Outcome]:
    """One hit when ``holds`` has been true for ``count`` consecutive events or for
    ``duration``; a miss (which re-arms ``until_clear``) when it stops holding."""
    frame = ctx.frame
    times = frame.time_list
    outcomes: list[Outcome] = []
    for entity, idx, key, st in ctx.groups(rows):
        st = st or {"t": None, "start": None, "n": 0, "done": False, "ids": []}
        for i in idx:
            t = times[i]
            if st["t"] is not None and t < st["t"]:
                ctx.mark_late(i, f"event time {iso(t)} is before the entity's previous "
                                 f"event at {iso(st['t'])}")
                continue
            st["t"] = t
            if not holds[i]:
                if st["start"] is not None:
                    outcomes.append(Outcome(time=t, hit=False, group=entity, index=i))
                st.update(start=None, n=0, done=False, ids=[])
                continue
            if st["start"] is None:
                st["start"] = t
            st["n"] += 1
            st["ids"] = [*st["ids"][-99:], frame.ids[i]]
            held = (st["n"] >= count if count is not None
                    else t - st["start"] >= (duration or 0))
            if held and not st["done"]:
                st["done"] = True
                outcomes.append(Outcome(
                    time=t, hit=True, group=entity, index=i, window=iso(st["start"]),
                    values={"held_events": st["n"], "held_since": iso(st["start"]),
                            "held_minutes": round((t - st["start"]) / 60, 1)},
                    source_ids=list(st["ids"])))
        ctx.state.save(key, st)
    return outcomes


class AbsenceRoster:
    """Per absence rule, the last event time of every entity not yet reported silent,
    so the stream time passing a deadline is found without scanning all state."""

    def __init__(self) -> None:
        self.last_seen: dict[str, dict[str, float]] = {}

    def for_rule(self, ctx: Context) -> dict[str, float]:
        roster = self.last_seen.get(ctx.prefix)
        if roster is None:  # first use since start: rebuild from the recovered state
            roster = {k[len(ctx.prefix):]: v["t"]
                      for k, v in ctx.state.values_with_prefix(ctx.prefix)
                      if not k.endswith("|~") and not v["alerted"]}
            self.last_seen[ctx.prefix] = roster
        return roster


def run_absence(cond: Absence, ctx: Context, rows: list[int],
                roster: AbsenceRoster) -> list[Outcome]:
    """A hit at ``last + after`` for every entity silent that long: found when it
    reports again after the gap, or when the stream's time passes the deadline."""
    frame = ctx.frame
    times = frame.time_list
    seen = roster.for_rule(ctx)
    outcomes: list[Outcome] = []

    def silent(entity: str, st: dict[str, Any]) -> Outcome:
        geometry = st["g"]
        if isinstance(geometry, int):  # the row of an earlier event in this frame
            geometry = frame.event(geometry).geometry
        return Outcome(time=st["t"] + cond.after, hit=True, group=entity,
                       values={"last_seen": iso(st["t"]),
                               "silent_minutes": round(cond.after / 60, 1)},
                       source_ids=[st["id"]], geometry=geometry)

    for entity, idx, key, st in ctx.groups(rows):
        for i in idx:
            t = times[i]
            if st is not None and t < st["t"]:
                continue  # an older event says nothing about silence now
            if st is not None and t - st["t"] > cond.after and not st["alerted"]:
                outcomes.append(silent(entity, st))
            if st is not None and (st["alerted"] or t - st["t"] > cond.after):
                outcomes.append(Outcome(time=t, hit=False, group=entity, index=i))
            st = {"t": t, "id": frame.ids[i], "g": i, "alerted": False}
        if st is None:
            continue
        if isinstance(st["g"], int):  # geometry of the last event only, decoded once
            st["g"] = frame.event(st["g"]).geometry
        seen[entity] = st["t"]
        ctx.state.save(key, st)
    clock_key = f"{ctx.prefix}~"
    fresh, clock = ctx.state.load(clock_key)
    if rows and fresh:
        clock = max(max(times[i] for i in rows), clock or -math.inf)
        ctx.state.save(clock_key, clock)
    if clock is None or not seen:
        return outcomes
    for entity in [e for e, last in seen.items() if clock - last > cond.after]:
        key = f"{ctx.prefix}{entity}"
        fresh, st = ctx.state.load(key)
        del seen[entity]
        if not fresh or st is None or st["alerted"]:
            continue
        outcomes.append(silent(entity, st))
        ctx.state.save(key, {**st, "alerted": True})
    return outcomes


def run_geofence(cond: Geofence, ctx: Context, rows: list[int], zone_col: np.ndarray,
                 target: np.ndarray | None, zone_names: list[str],
                 zone_ids: list[str]) -> list[Outcome]:
    """inside/outside per event; enter/exit from the entity's previous zone."""
    frame = ctx.frame
    times = frame.time_list
    outcomes: list[Outcome] = []
    for entity, idx, key, st in ctx.groups(rows):
        for i in idx:
            if math.isnan(frame.lon[i]):
                continue
            t = times[i]
            if st is not None and t < st["t"]:
                ctx.mark_late(i, f"event time {iso(t)} is before the entity's previous "
                                 f"position at {iso(st['t'])}")
                continue
            z = int(zone_col[i])
            if z >= 0 and target is not None and not target[z]:
                z = -1
            prev = st["z"] if st is not None else None
            shown = z
            if cond.event == "inside":
                hit = z >= 0
            elif cond.event == "outside":
                hit = z < 0
            elif cond.event == "enter":
                hit = prev is not None and z >= 0 and z != prev
            else:
                hit = prev is not None and prev >= 0 and z != prev
                shown = prev if prev is not None and prev >= 0 else z
            zone = (zone_ids[shown], zone_names[shown]) if shown >= 0 else None
            outcomes.append(Outcome(
                time=t, hit=hit, group=entity, index=i, zone=zone,
                window=zone[0] if zone else "",
                values={"geofence": zone[1] if zone else "-", "transition": cond.event}))
            st = {"t": t, "z": z}
        ctx.state.save(key, st)
    return outcomes


def run_correlate(cond: Correlate, ctx: Context, sides: list[tuple[int, int, int]],
                  zone_names: list[str], zone_ids: list[str]) -> list[Outcome]:
    """``sides`` holds ``(row, side 0|1, zone)`` in arrival order. A hit when an event
    finds events of the other side in its zone within ``within`` seconds; the alert is
    anchored on the first side's event, so later partners update the same alert id."""
    frame = ctx.frame
    times = frame.time_list
    outcomes: list[Outcome] = []
    for zone_text, entries, key, st in ctx.groups(range(len(sides)),
                                                  lambda k: str(sides[k][2])):
        st = st or {"wm": None, "seen": [[], []]}
        z = int(zone_text)
        for k in entries:
            i, side, _ = sides[k]
            t = times[i]
            event = frame.event(i)
            wm = ctx.effective(st["wm"])
            if wm is not None and t < wm - cond.within:
                ctx.mark_late(i, f"event time {iso(t)} is more than {cond.within:g}s "
                                 f"behind the zone's stream time {iso(wm)}")
                continue
            partners = [p for p in st["seen"][1 - side] if abs(p[0] - t) <= cond.within]
            anchors = [[t, event.id, event.entity_id, event.kind]] if side == 0 else partners
            others = partners if side == 0 else [[t, event.id, event.entity_id, event.kind]]
            for anchor in anchors if partners else []:
                outcomes.append(Outcome(
                    time=anchor[0], hit=True, group=zone_names[z], window=anchor[1],
                    values={"first_kind": anchor[3], "first_entity": anchor[2],
                            "second_kind": others[0][3], "second_entity": others[0][2],
                            "zone": zone_names[z]},
                    source_ids=[anchor[1], *[o[1] for o in others]],
                    zone=(zone_ids[z], zone_names[z])))
            st["seen"][side].append([t, event.id, event.entity_id, event.kind])
            st["wm"] = t if st["wm"] is None else max(st["wm"], t)
            horizon = (ctx.effective(st["wm"]) or t) - 2 * cond.within
            st["seen"] = [[p for p in lst if p[0] >= horizon] for lst in st["seen"]]
        ctx.state.save(key, st)
    return outcomes


class Gate:
    """Cooldown and hysteresis in front of a stateful rule's hits, per dedupe key.

    A hit becomes an alert unless the key alerted less than ``cooldown`` seconds ago or,
    with ``until_clear``, has not cleared since its last alert (a miss clears it; with
    ``clear_when`` only an event meeting that condition does: a hysteresis band).
    """

    def __init__(self, spec: AlertSpec) -> None:
        self.cooldown = spec.cooldown
        self.until_clear = spec.until_clear or spec.clear_when is not None
        self.with_clear = spec.clear_when is not None

    @property
    def active(self) -> bool:
        return self.cooldown is not None or self.until_clear

    def pass_hits(self, ctx: Context, keyed: list[tuple[str, Outcome]],
                  cleared: np.ndarray | None) -> list[Outcome]:
        """The outcomes (hits only) that become alerts; ``keyed`` in arrival order."""
        if not self.active:
            return [o for _, o in keyed if o.hit]
        passed: list[Outcome] = []
        by_key: dict[str, list[Outcome]] = {}
        for key, outcome in keyed:
            by_key.setdefault(key, []).append(outcome)
        for dedupe, outcomes in by_key.items():
            key = f"{ctx.prefix}gate|{dedupe}"
            fresh, st = ctx.state.load(key)
            if not fresh:
                continue
            st = st or {"armed": True, "last": None}
            for o in outcomes:
                if self.with_clear:
                    if o.index >= 0 and cleared is not None and cleared[o.index]:
                        st["armed"] = True
                elif not o.hit:
                    st["armed"] = True
                if not o.hit:
                    continue
                if self.until_clear and not st["armed"]:
                    continue
                if (self.cooldown is not None and st["last"] is not None
                        and o.time - st["last"] < self.cooldown):
                    continue
                passed.append(o)
                st["armed"] = False
                st["last"] = o.time
            ctx.state.save(key, st)
        return passed
