"""Backtests: what two rule-set versions would have done on the same events, and the
difference, through the same rule core the workers run (every kind's state machine,
windows and lateness included), offline.

Alerts are matched across versions by rule id and what they fired on (their source
event ids: the event, or every event of a window or correlation), not by alert id, which
includes the rule's version. An alert of the candidate with no match in the baseline is
*added*, one of the baseline with none in the candidate *removed*, the others
*unchanged*.

Example:
    >>> from datetime import UTC, datetime
    >>> from citywatch.rules.model import RuleSet
    >>> from citywatch.streams.envelope import make_envelope
    >>> def rules(limit):
    ...     return RuleSet.model_validate({"rules": [{"id": "big-quake", "domain": "disaster",
    ...         "condition": {"type": "threshold", "attribute": "mag", "op": ">=",
    ...                       "value": limit},
    ...         "alert": {"severity": "Severe", "category": "Geo", "message": "M{mag}"}}]})
    >>> quakes = [make_envelope(source="usgs", source_record_id=str(m), domain="disaster",
    ...     kind="earthquake.reported", time=datetime(2024, 1, 1, m, tzinfo=UTC),
    ...     entity_id=f"q{m}", attributes={"mag": float(m)}) for m in range(1, 8)]
    >>> report = backtest(rules(5), rules(4), quakes)
    >>> report["diff"]["big-quake"]["counts"]
    {'added': 1, 'removed': 0, 'unchanged': 3}
"""

from __future__ import annotations

import gc
import math
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from citywatch.forecasts.grid import ForecastBook
from citywatch.geo.zones import ZoneIndex
from citywatch.rules.engine import RuleEngine, build_zone_index
from citywatch.rules.labels import Label, score
from citywatch.rules.model import RuleSet
from citywatch.streams.alert import Alert
from citywatch.streams.batch import ColumnFrame, build_frame, epoch_seconds
from citywatch.streams.envelope import Envelope

FRAME = 5000
SAMPLE = 5

MatchKey = tuple[str, frozenset[str]]


Frames = list[tuple[ColumnFrame, Sequence[Envelope]]]


def frames_of(events: Sequence[Envelope], frame: int = FRAME) -> Frames:
    """``events`` in event-time order (then by id), cut into frames as a worker takes
    them (built once, evaluated by as many rule sets as wanted)."""
    times = epoch_seconds([e.time for e in events])
    ordered = [events[i] for i in time_order(times, [e.id for e in events])]
    return [(build_frame(chunk, raws=[b""] * len(chunk)), chunk)
            for chunk in (ordered[start:start + frame]
                          for start in range(0, len(ordered), frame))]


def time_order(times: NDArray[np.float64], ids: Sequence[str]) -> list[int]:
    """Row indexes by time, then id (rows equal in both keep their order).

    Example:
        >>> time_order(np.array([2.0, 1.0, 2.0, 2.0]), ["b", "z", "a", "b"])
        [1, 2, 0, 3]
    """
    order = np.argsort(times, kind="stable")
    ordered = times[order]
    tied = np.flatnonzero(ordered[1:] == ordered[:-1])  # row k ties with row k + 1
    result: list[int] = order.tolist()
    if tied.size:
        gap = np.diff(tied) > 1
        starts = tied[np.concatenate(([True], gap))].tolist()
        stops = (tied[np.concatenate((gap, [True]))] + 2).tolist()
        for start, stop in zip(starts, stops, strict=True):
            result[start:stop] = sorted(result[start:stop], key=ids.__getitem__)
    return result


def run_rules(ruleset: RuleSet, events: Sequence[Envelope] | Frames, *,
              forecasts: ForecastBook | None = None,
              late: list[tuple[Envelope, str, str]] | None = None,
              repeated: Collection[str] | None = None,
              zones: ZoneIndex | None = None) -> list[Alert]:
    """Every alert ``ruleset`` raises over ``events`` (or their :func:`frames_of`),
    windows still open at the end closed; events too late for a rule are added to
    ``late`` as (event, rule id, reason). ``repeated``: the ids that occur more than
    once in ``events`` (:func:`repeated_ids`, computed when not given); ``zones``: the
    rule set's zone layers, when already loaded."""
    with collector_paused():
        return _run_rules(ruleset, events, forecasts=forecasts, late=late,
                          repeated=repeated, zones=zones)


def _run_rules(ruleset: RuleSet, events: Sequence[Envelope] | Frames, *,
               forecasts: ForecastBook | None,
               late: list[tuple[Envelope, str, str]] | None,
               repeated: Collection[str] | None, zones: ZoneIndex | None) -> list[Alert]:
    frames = events if events and isinstance(events[0], tuple) else frames_of(
        events)  # type: ignore[arg-type]
    engine = RuleEngine.from_ruleset(
        ruleset, forecasts=forecasts,
        repeated_ids=repeated if repeated is not None else repeated_ids(frames),  # type: ignore[arg-type]
        zones=zones)
    alerts: list[Alert] = []
    for columns, chunk in frames:  # type: ignore[misc]
        result = engine.process(columns, envelopes=chunk)
        result.commit_state()
        alerts += result.alerts
        if late is not None:
            late += result.late
    return alerts + engine.flush()


def repeated_ids(frames: Frames) -> set[str]:
    """The event ids that occur more than once in ``frames``: the whole input is known,
    so the rule engine need remember only these to apply each event once."""
    ids = pd.Series(list(chain.from_iterable(columns.ids for columns, _ in frames)),
                    dtype=object)
    return set(ids[ids.duplicated(keep=False)])


def shared_rules(baseline: RuleSet, candidate: RuleSet) -> set[str]:
    """Ids of the enabled rules identical (same version) in both rule sets."""
    old = {r.id: r.version for r in baseline.rules if r.enabled}
    return {r.id for r in candidate.rules if r.enabled and old.get(r.id) == r.version}


def match_key(alert: Alert) -> MatchKey:
    """What an alert fired on, whatever the version: its rule and source events."""
    return alert.rule_id, frozenset(alert.source_event_ids)


def volumes(alerts: Iterable[Alert], days: float) -> dict[str, dict[str, Any]]:
    """Per rule: alerts, alerts per day, distinct entities and zones."""
    by_rule: dict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        by_rule[alert.rule_id].append(alert)
    return {rule: {"alerts": len(found), "per_day": round(len(found) / days, 3),
                   "entities": len({a.entity_id for a in found}),
                   "zones": len({a.zone_name for a in found if a.zone_name})}
            for rule, found in sorted(by_rule.items())}


def daily(alerts: Iterable[Alert]) -> dict[str, int]:
    """Alerts per UTC day of their event time."""
    return dict(sorted(Counter(a.event_time.strftime("%Y-%m-%d") for a in alerts).items()))


def rule_changes(baseline: RuleSet, candidate: RuleSet) -> dict[str, list[str]]:
    """Per rule id, what differs between the versions (``condition.value: 20 -> 15``),
    ``added``/``removed`` for rules only one has."""
    old = {r.id: r.model_dump(mode="json") for r in baseline.rules}
    new = {r.id: r.model_dump(mode="json") for r in candidate.rules}
    changes: dict[str, list[str]] = {}
    for rule in sorted(old.keys() | new.keys()):
        if rule not in old:
            changes[rule] = ["rule added"]
        elif rule not in new:
            changes[rule] = ["rule removed"]
        else:
            found = _differences(old[rule], new[rule], "")
            if found:
                changes[rule] = found
    return changes


def _differences(old: Any, new: Any, path: str) -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in sorted(old.keys() | new.keys())
                for line in _differences(old.get(key), new.get(key),
                                         f"{path}.{key}" if path else key)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [line for i, (a, b) in enumerate(zip(old, new, strict=True))
                for line in _differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def _sample(alerts: Iterable[Alert]) -> list[dict[str, Any]]:
    return [{"event_time": a.event_time.isoformat(), "entity": a.entity_id,
             "zone": a.zone_name, "message": a.message,
             "source_event_ids": a.source_event_ids[:5]}
            for a in sorted(alerts, key=lambda a: (a.event_time, a.id))[:SAMPLE]]


def backtest(baseline: RuleSet, candidate: RuleSet, events: Sequence[Envelope], *,
             forecasts: ForecastBook | None = None, noisy_per_day: float = 50.0,
             labels: Sequence[Label] | None = None, before: timedelta = timedelta(hours=24),
             after: timedelta = timedelta(hours=1), within_m: float = 50_000.0,
             ) -> dict[str, Any]:
    """Both versions over ``events``: volumes, daily counts, the diff per rule (with a
    sample of each side and what changed in the rule), the rules louder than
    ``noisy_per_day``, and with ``labels`` each version's precision, recall and lead
    time (:mod:`citywatch.rules.labels`, with the tolerances given)."""
    with collector_paused():
        return _backtest(baseline, candidate, events, forecasts=forecasts,
                         noisy_per_day=noisy_per_day, labels=labels, before=before,
                         after=after, within_m=within_m)


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off for a bulk evaluation, as it was after.

    Each collection walks every live container: a backtest holds a million input
    envelopes (with their attribute and geometry dicts) and allocates frames, outcomes
    and alerts fast enough to trigger dozens of full walks, a quarter of its time. It
    makes almost no reference cycles (under 200 objects over a million events), and
    those are collected once it is over."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _backtest(baseline: RuleSet, candidate: RuleSet, events: Sequence[Envelope], *,
              forecasts: ForecastBook | None, noisy_per_day: float,
              labels: Sequence[Label] | None, before: timedelta, after: timedelta,
              within_m: float) -> dict[str, Any]:
    frames = frames_of(events)
    # a rule both versions hold unchanged raises the same alerts in both: it is
    # evaluated once (each rule's state is its own; alert ids carry the rule version)
    shared = shared_rules(baseline, candidate)
    repeated = repeated_ids(frames)
    zones = build_zone_index(baseline)
    before_raw = run_rules(baseline, frames, forecasts=forecasts, repeated=repeated,
                           zones=zones)
    after_raw = [a for a in before_raw if a.rule_id in shared] + run_rules(
        candidate.model_copy(update={"rules": [r for r in candidate.rules
                                               if r.id not in shared]}),
        frames, forecasts=forecasts, repeated=repeated,
        # the same zone files: their lookups are shared (remembered per place)
        zones=zones if candidate.zones == baseline.zones else None)
    # an alert raised twice (the same source record read twice) is stored once
    before_alerts = list({a.id: a for a in before_raw}.values())
    after_alerts = list({a.id: a for a in after_raw}.values())
    times = [e.time for e in events]
    start, end = (min(times), max(times)) if times else (None, None)
    days = max(1.0, math.ceil((end - start).total_seconds() / 86400)) if start and end \
        else 1.0
    old = {match_key(a): a for a in before_alerts}
    new = {match_key(a): a for a in after_alerts}
    changes = rule_changes(baseline, candidate)
    diff: dict[str, dict[str, Any]] = {}
    for rule in sorted({k[0] for k in old.keys() | new.keys()} | set(changes)):
        added = [new[k] for k in new.keys() - old.keys() if k[0] == rule]
        removed = [old[k] for k in old.keys() - new.keys() if k[0] == rule]
        same = [k for k in old.keys() & new.keys() if k[0] == rule]
        diff[rule] = {"counts": {"added": len(added), "removed": len(removed),
                                 "unchanged": len(same)},
                      "rule_changes": changes.get(rule, []),
                      "added_sample": _sample(added), "removed_sample": _sample(removed)}
    per_rule = {"baseline": volumes(before_alerts, days),
                "candidate": volumes(after_alerts, days)}
    return {
        "events": len(events),
        "event_time": {"from": _iso(start), "to": _iso(end), "days": days},
        "versions": {"baseline": baseline.version, "candidate": candidate.version},
        "alerts": {"baseline": len(before_alerts), "candidate": len(after_alerts)},
        "per_rule": per_rule,
        "daily": {"baseline": daily(before_alerts), "candidate": daily(after_alerts)},
        "diff": diff,
        "totals": {side: sum(d["counts"][side] for d in diff.values())
                   for side in ("added", "removed", "unchanged")},
        "noisy": {version: sorted(rule for rule, v in rules.items()
                                  if v["per_day"] > noisy_per_day)
                  for version, rules in per_rule.items()},
        "labels": None if labels is None else {
            "tolerances": {"before_seconds": before.total_seconds(),
                           "after_seconds": after.total_seconds(), "within_m": within_m},
            "baseline": score(before_alerts, labels, before=before, after=after,
                              within_m=within_m),
            "candidate": score(after_alerts, labels, before=before, after=after,
                               within_m=within_m)},
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def expectation_problems(report: dict[str, Any], expected: dict[str, Any],
                         side: str = "candidate") -> list[str]:
    """Each rule whose alert count in ``report`` is off ``expected`` (``rule: N`` or
    ``rule: {min: A, max: B}``)."""
    counts = {rule: v["alerts"] for rule, v in report["per_rule"][side].items()}
    problems = []
    for rule, want in sorted(expected.items()):
        got = counts.get(rule, 0)
        low, high = (want.get("min", 0), want.get("max", math.inf)) \
            if isinstance(want, dict) else (want, want)
        if not low <= got <= high:
            wanted = str(want) if not isinstance(want, dict) else \
                f"between {low} and {high}"
            problems.append(f"{rule}: {got} alert(s), expected {wanted}")
    return problems
