"""Why did this alert fire? One answer from the store alone.

:func:`explain_alert` gathers the alert; the rule as written at the alert's rule version,
the rule-set version that carried it and who proposed, approved or applied it and when;
the source events (the triggering event's envelope as the alert kept it, and where each
came from — ``file:line`` for file connectors — when known); the zone matched; the values
the rule compared with its thresholds; the forecast model for forecast rules; and the
incident with its audit trail. :func:`as_prov` renders that as W3C PROV-JSON
(``ops/standards/prov-json.schema.json`` is the member submission's schema).

Example:
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> explain_alert(store, "no-such-alert", configured=None) is None
    True
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pyproj import Geod

from citywatch.ops.store.queries import get_alert, get_incident
from citywatch.ops.store.rulesets import RuleSetBook
from citywatch.ops.store.store import IncidentStore
from citywatch.rules.loader import RuleSetError, load_ruleset, parse_ruleset
from citywatch.rules.model import (
    Anomaly,
    ForecastExceedance,
    InZone,
    Match,
    Persistence,
    Proximity,
    RateOfChange,
    Rule,
    Threshold,
    Window,
    walk_conditions,
)

PROV_JSON_SCHEMA = Path(__file__).parent / "standards" / "prov-json.schema.json"
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
    "==": operator.eq, "!=": operator.ne}
_GEOD = Geod(ellps="WGS84")


def _holds(observed: Any, op: str, value: Any, low_high: Any = None) -> bool | None:
    if not isinstance(observed, int | float) or isinstance(observed, bool) or (
            isinstance(observed, float) and math.isnan(observed)):
        return None
    if op == "between":
        return bool(low_high[0] <= observed <= low_high[1])
    if op == "outside":
        return bool(observed < low_high[0] or observed > low_high[1])
    return bool(_OPS[op](observed, value))


def compared_values(rule: Rule, alert: Any) -> list[dict[str, Any]]:
    """What each condition of ``rule`` looked at in ``alert`` and what it was compared
    with (from the alert's stored attributes, evaluation values, zone and area)."""
    seen = {**(alert.attributes or {}), **(getattr(alert, "evaluation", None) or {})}
    out: list[dict[str, Any]] = []
    for cond in walk_conditions(rule.condition):
        if isinstance(cond, Threshold):
            observed = seen.get(cond.attribute)
            out.append({"condition": "threshold", "attribute": cond.attribute,
                        "observed": observed, "op": cond.op,
                        "threshold": cond.range if cond.range else cond.value,
                        "holds": _holds(observed, cond.op, cond.value, cond.range)})
        elif isinstance(cond, Match):
            observed = seen.get(cond.attribute)
            out.append({"condition": "match", "attribute": cond.attribute,
                        "observed": observed, "values": cond.values,
                        "holds": observed in cond.values})
        elif isinstance(cond, InZone):
            out.append({"condition": "in_zone", "layer": cond.layer,
                        "zone": alert.zone_name, "outside": cond.outside,
                        "named": cond.zones})
        elif isinstance(cond, Proximity):
            out.append(_proximity(cond, alert))
        elif isinstance(cond, Window):
            observed = seen.get("value")
            out.append({"condition": "window", "aggregate": cond.aggregate,
                        "attribute": cond.attribute, "observed": observed,
                        "count": seen.get("count"), "op": cond.op, "threshold": cond.value,
                        "window": [seen.get("window_start"), seen.get("window_end")],
                        "holds": _holds(observed, cond.op, cond.value)})
        elif isinstance(cond, RateOfChange):
            observed = seen.get("rate")
            out.append({"condition": "rate_of_change", "attribute": cond.attribute,
                        "observed": observed, "op": cond.op, "threshold": cond.value,
                        "holds": _holds(observed, cond.op, cond.value)})
        elif isinstance(cond, Persistence):
            out.append({"condition": "persistence", "held_events": seen.get("held_events"),
                        "held_since": seen.get("held_since"), "count": cond.count,
                        "duration_s": cond.duration})
        elif isinstance(cond, ForecastExceedance):
            bound = {"yhat": "forecast", "upper": "forecast_upper",
                     "lower": "forecast_lower"}[cond.bound]
            observed = seen.get(bound)
            out.append({"condition": "forecast_exceedance", "series": cond.series,
                        "bound": cond.bound, "observed": observed, "op": cond.op,
                        "threshold": cond.value, "expected_at": seen.get("expected_at"),
                        "holds": _holds(observed, cond.op, cond.value)})
        elif isinstance(cond, Anomaly):
            out.append({"condition": "anomaly", "series": cond.series,
                        "expected": seen.get("expected"),
                        "interval": [seen.get("expected_lower"), seen.get("expected_upper")]})
    return out


def _proximity(cond: Proximity, alert: Any) -> dict[str, Any]:
    circle = alert.area_circle
    point = (alert.geometry or {}).get("coordinates") if (
        alert.geometry or {}).get("type") == "Point" else None
    distance = None
    if circle and point:
        _, _, metres = _GEOD.inv(point[0], point[1], circle[0], circle[1])
        distance = round(float(metres), 1)
    return {"condition": "proximity", "observed_m": distance, "op": "<=",
            "threshold_m": cond.within_m, "target": cond.sites or cond.point,
            "site_at": circle[:2] if circle else None,
            "holds": None if distance is None else distance <= cond.within_m + 0.5}


def find_rule(book: RuleSetBook, rule_id: str, rule_version: str,
              configured: Path | None) -> tuple[Rule, dict[str, Any]] | None:
    """The rule ``rule_id`` at ``rule_version`` and the rule-set version that carried it
    (newest first: live history, then proposals, then the configured file)."""
    candidates: list[tuple[str, str, Path, dict[str, Any]]] = []
    proposals = {p.version: p for p in book.proposals()}
    for applied in book.history():
        proposal = proposals.get(applied.version)
        candidates.append((applied.version, applied.content, applied.base_dir, {
            "applied_by": applied.applied_by, "applied_at": applied.applied_at.isoformat(),
            "proposed_by": proposal.proposed_by if proposal else applied.applied_by,
            "approved_by": proposal.decided_by if proposal else None,
            "approved_at": proposal.decided_at.isoformat() if proposal and
            proposal.decided_at else None}))
    for proposal in proposals.values():
        candidates.append((proposal.version, proposal.content, proposal.base_dir, {
            "proposed_by": proposal.proposed_by, "status": proposal.status}))
    for version, content, base_dir, who in candidates:
        try:
            ruleset = parse_ruleset(content, base_dir / "rules.yaml")
        except RuleSetError:
            continue
        for rule in ruleset.rules:
            if rule.id == rule_id and rule.version == rule_version:
                return rule, {"rule_set_version": version, **who}
    if configured is not None:
        try:
            ruleset = load_ruleset(configured)
        except (RuleSetError, OSError):
            return None
        for rule in ruleset.rules:
            if rule.id == rule_id and rule.version == rule_version:
                return rule, {"rule_set_version": ruleset.version,
                              "configured_file": str(configured)}
    return None


def explain_alert(store: IncidentStore, alert_id: str, *,
                  configured: Path | None) -> dict[str, Any] | None:
    """Everything about why ``alert_id`` fired (see the module docs), or None."""
    alert = get_alert(store, alert_id)
    if alert is None:
        return None
    found = find_rule(RuleSetBook(store), alert.rule_id, alert.rule_version, configured)
    origins = list(getattr(alert, "source_origins", None) or [])
    sources = [{"event_id": event_id,
                "origin": origins[n] if n < len(origins) and origins[n] else None}
               for n, event_id in enumerate(alert.source_event_ids)]
    if sources:
        sources[0]["envelope"] = {"entity_id": alert.entity_id, "kind": alert.kind,
                                  "domain": alert.domain,
                                  "time": alert.event_time.isoformat(),
                                  "geometry": alert.geometry,
                                  "attributes": alert.attributes}
    incident = get_incident(store, alert.incident_id)
    rule_part: dict[str, Any] = {"id": alert.rule_id, "version": alert.rule_version}
    compared: list[dict[str, Any]] = []
    if found is not None:
        rule, who = found
        rule_part.update(who, text=yaml.safe_dump(
            rule.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
        compared = compared_values(rule, alert)
    return {
        "alert": {"id": alert.id, "message": alert.message, "severity": alert.severity,
                  "urgency": alert.urgency, "certainty": alert.certainty,
                  "event_time": alert.event_time.isoformat(),
                  "raised_at": alert.raised_at.isoformat()},
        "rule": rule_part,
        "sources": sources,
        "zone": {"layer": alert.zone_layer, "id": alert.zone_id, "name": alert.zone_name}
        if alert.zone_id is not None else None,
        "compared": compared,
        "model": {"id": alert.model_id, "version": alert.model_version}
        if alert.model_id else None,
        "incident": None if incident is None else {
            "id": incident["incident"].id, "status": incident["incident"].status,
            "alert_count": incident["incident"].alert_count,
            "audit": [{"at": a.at.isoformat(), "actor": a.actor, "action": a.action}
                      for a in incident["audit"]]},
    }


def as_prov(explained: dict[str, Any]) -> dict[str, Any]:
    """The explanation as a W3C PROV-JSON document: the alert, its source events, the
    rule and rule-set version and the model are entities; the rule evaluation is the
    activity that used them and generated the alert; the worker and the people who
    proposed, approved or applied the rule set are agents."""
    alert, rule = explained["alert"], explained["rule"]
    evaluation = f"cw:evaluation/{alert['id']}"
    doc: dict[str, Any] = {
        "prefix": {"cw": "urn:citywatch:"},
        "entity": {f"cw:alert/{alert['id']}": {
            "prov:type": "cw:Alert", "prov:label": alert["message"],
            "cw:severity": alert["severity"]}},
        "activity": {evaluation: {"prov:startTime": alert["raised_at"],
                                  "prov:endTime": alert["raised_at"],
                                  "prov:type": "cw:RuleEvaluation"}},
        "agent": {"cw:agent/worker": {"prov:type": "prov:SoftwareAgent",
                                      "prov:label": "citywatch worker"}},
        "used": {}, "wasGeneratedBy": {}, "wasAttributedTo": {}, "wasAssociatedWith": {},
    }
    counter = iter(range(1, 1_000_000))

    def relation(kind: str, **members: str) -> None:
        doc[kind][f"_:{kind}{next(counter)}"] = members

    relation("wasGeneratedBy", **{"prov:entity": f"cw:alert/{alert['id']}",
                                  "prov:activity": evaluation,
                                  "prov:time": alert["raised_at"]})
    relation("wasAssociatedWith", **{"prov:activity": evaluation,
                                     "prov:agent": "cw:agent/worker"})
    rule_entity = f"cw:rule/{rule['id']}/{rule['version']}"
    doc["entity"][rule_entity] = {"prov:type": "cw:Rule", "prov:label": rule["id"]}
    relation("used", **{"prov:activity": evaluation, "prov:entity": rule_entity})
    if rule.get("rule_set_version"):
        ruleset = f"cw:ruleset/{rule['rule_set_version']}"
        doc["entity"][ruleset] = {"prov:type": "cw:RuleSetVersion"}
        relation("used", **{"prov:activity": evaluation, "prov:entity": ruleset})
        for role in ("proposed_by", "approved_by", "applied_by"):
            person = rule.get(role)
            if person:
                agent = f"cw:agent/{person}"
                doc["agent"].setdefault(agent, {"prov:type": "prov:Person",
                                                "prov:label": person})
                relation("wasAttributedTo", **{"prov:entity": ruleset, "prov:agent": agent})
    for source in explained["sources"]:
        entity = f"cw:event/{source['event_id']}"
        doc["entity"][entity] = {"prov:type": "cw:Event", **(
            {"cw:origin": source["origin"]} if source.get("origin") else {})}
        relation("used", **{"prov:activity": evaluation, "prov:entity": entity})
    model = explained.get("model")
    if model:
        entity = f"cw:model/{model['id']}/{model['version']}"
        doc["entity"][entity] = {"prov:type": "cw:ForecastModel"}
        relation("used", **{"prov:activity": evaluation, "prov:entity": entity})
    return {k: v for k, v in doc.items() if v}
