"""Complete validation of a rule set, beyond its schema: what would only fail (or, worse,
silently never match) once workers run it.

Every problem is reported as ``FILE:LINE:COL: message`` at the place of use:

* every zone and site layer file loads, and its ``name_field`` / ``id_field`` exist;
* every zone named in an ``in_zone`` condition exists in its layer (the closest names
  are suggested: ``Pioneer Sqaure`` → ``Pioneer Square``);
* every ``{placeholder}`` of an alert message is a field the rule provides (the event's
  attributes as the feeds declare them, the attributes its conditions read, and what its
  kind adds, e.g. ``value`` and ``count`` for windows), with at most a bounded format
  spec (width ≤ 200, precision ≤ 20; no conversions, attribute or index access);
* a forecast rule's series has a trained model (a *warning* when not yet).

Document-level limits (size, nesting, aliases) and schema errors come from
:func:`~citywatch.rules.loader.parse_ruleset`, which this runs first.

Example:
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.yaml"
    >>> _ = p.write_text('''rules:
    ...   - id: pm25
    ...     domain: environment
    ...     condition: {type: threshold, attribute: pm25, op: ">", value: 20}
    ...     alert: {severity: Moderate, category: Env, message: "{pm25} in {zon}"}
    ... ''')
    >>> report = validate_ruleset(p, attributes={"environment": {"pm25", "site_name"}})
    >>> print(report.findings[0].message)
    unknown placeholder {zon} in the message (did you mean {zone}?)
    >>> report.ok
    False
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from citywatch.geo.sites import SiteLayer
from citywatch.geo.zones import ZoneLayer, ZoneLayerError
from citywatch.rules.loader import RuleSetError, node_at, parse_ruleset, where
from citywatch.rules.model import (
    Absence,
    Anomaly,
    Correlate,
    ForecastExceedance,
    Geofence,
    InZone,
    Persistence,
    Proximity,
    RateOfChange,
    Rule,
    RuleSet,
    Window,
    walk_conditions,
)
from citywatch.rules.templates import suggest, template_problems

BUILT_IN_FIELDS = frozenset({"entity_id", "zone", "kind", "time"})
KIND_FIELDS: dict[type, frozenset[str]] = {
    Window: frozenset({"value", "aggregate", "attribute", "count", "window_start",
                       "window_end"}),
    RateOfChange: frozenset({"rate", "previous"}),
    Persistence: frozenset({"held_events", "held_since", "held_minutes"}),
    Absence: frozenset({"last_seen", "silent_minutes"}),
    Geofence: frozenset({"geofence", "transition"}),
    Correlate: frozenset({"first_kind", "first_entity", "second_kind", "second_entity"}),
    ForecastExceedance: frozenset({"expected_at", "lead_minutes", "forecast", "forecast_lower",
                                   "forecast_upper", "model_id", "model_version"}),
    Anomaly: frozenset({"expected", "expected_lower", "expected_upper", "model_id",
                        "model_version"}),
    Proximity: frozenset({"site", "distance_km"}),
}
QUOTED = "'{}'"

@dataclass(frozen=True)
class Finding:
    """One problem, where it is, and whether it stops the rule set (``error``)."""

    where: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        label = "warning: " if self.severity == "warning" else ""
        return f"{self.where}: {label}{self.message}"


@dataclass
class ValidationReport:
    """What :func:`validate_ruleset` found; ``ruleset`` is None when it did not parse."""

    ruleset: RuleSet | None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    @property
    def errors(self) -> list[str]:
        return [str(f) for f in self.findings if f.severity == "error"]


def provided_fields(rule: Rule, attributes: Mapping[str, Collection[str]]) -> set[str]:
    """The names an alert message of ``rule`` may use."""
    names = set(BUILT_IN_FIELDS)
    for cond in walk_conditions(rule.condition):
        names |= KIND_FIELDS.get(type(cond), frozenset())
        attribute = getattr(cond, "attribute", None)
        if isinstance(attribute, str):
            names.add(attribute)
    domains = [rule.domain]
    if isinstance(rule.condition, Correlate):
        domains = [rule.condition.first.domain, rule.condition.second.domain]
    for domain in domains:
        names |= set(attributes.get(domain, ()))
    return names


def validate_ruleset(path: Path, *, attributes: Mapping[str, Collection[str]] | None = None,
                     trained_series: Collection[str] | None = None) -> ValidationReport:
    """Validate the rule file at ``path`` completely (see the module docs).

    ``attributes`` maps a domain to the attribute names its feeds declare; an unknown
    placeholder in a rule on a domain not in it (or with ``attributes`` None) is only a
    warning.
    ``trained_series`` (None: not checked) lists the series with a trained model.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return ValidationReport(None, [Finding(str(path), f"cannot read: {exc}")])
    try:
        ruleset = parse_ruleset(text, path)
    except RuleSetError as exc:
        return ValidationReport(None, [Finding(*_split(line)) for line in exc.errors])
    root = yaml.compose(text)
    report = ValidationReport(ruleset)

    def at(*loc: str | int) -> str:
        return where(path, node_at(root, loc))

    names: dict[str, ZoneLayer] = {}
    for number, spec in enumerate(ruleset.zones):
        try:
            names[spec.layer] = ZoneLayer.from_file(spec.layer, spec.path,
                                                    name_field=spec.name_field,
                                                    id_field=spec.id_field, crs=spec.crs)
        except ZoneLayerError as exc:
            report.findings.append(Finding(at("zones", number, _blame(exc, spec)), str(exc)))
    for number, site in enumerate(ruleset.sites):
        try:
            SiteLayer.from_file(site.layer, site.path, name_field=site.name_field,
                                crs=site.crs)
        except ZoneLayerError as exc:
            report.findings.append(Finding(at("sites", number, _blame(exc, site)), str(exc)))

    for number, rule in enumerate(ruleset.rules):
        _check_zone_names(rule, number, root, path, names, report)
        provided = provided_fields(rule, attributes or {})
        known = attributes is not None and all(
            d in attributes for d in ([rule.domain] if not isinstance(rule.condition, Correlate)
                                      else [rule.condition.first.domain,
                                            rule.condition.second.domain]))
        for problem in template_problems(rule.alert.message, provided):
            unknown = problem.startswith("unknown placeholder")
            report.findings.append(Finding(
                at("rules", number, "alert", "message"),
                problem if known or not unknown else
                f"{problem}; no feed configuration declares the attributes of this domain, "
                "so it may still be one", "error" if known or not unknown else "warning"))
        if trained_series is not None:
            for series in rule.forecast_series():
                if series not in trained_series:
                    report.findings.append(Finding(
                        at("rules", number, "condition", "series"),
                        f"no trained model for series '{series}' yet (citywatch forecasts "
                        "train); the rule raises nothing until there is one", "warning"))
    return report


def _split(line: str) -> tuple[str, str]:
    """``FILE:LINE:COL: message`` → (``FILE:LINE:COL``, ``message``)."""
    match = re.match(r"^(.*?:\d+:\d+): (.*)$", line, re.DOTALL)
    return (match[1], match[2]) if match else ("", line)


def _blame(exc: ZoneLayerError, spec: Any) -> str:
    """Which key of a layer spec a layer error is about."""
    text = str(exc)
    if spec.name_field and f"'{spec.name_field}'" in text and "property" in text:
        return "name_field"
    if getattr(spec, "id_field", None) and f"'{spec.id_field}'" in text:
        return "id_field"
    return "path"


def _check_zone_names(rule: Rule, number: int, root: yaml.Node, path: Path,
                      layers: Mapping[str, ZoneLayer], report: ValidationReport) -> None:
    """Every zone an ``in_zone`` condition names exists in its layer."""
    for loc, node in _conditions_with_locations(root, ("rules", number, "condition")):
        if not (isinstance(node, InZone) and node.zones and node.layer in layers):
            continue
        layer = layers[node.layer]
        known = set(layer.zone_names) | set(layer.zone_ids)
        for index, name in enumerate(node.zones):
            if name not in known:
                report.findings.append(Finding(
                    where(path, node_at(root, (*loc, "zones", index))),
                    f"zone '{name}' is not in layer '{node.layer}'"
                    f"{suggest(name, layer.zone_names, QUOTED)}"))


def _conditions_with_locations(root: yaml.Node, loc: tuple[str | int, ...],
                               ) -> list[tuple[tuple[str | int, ...], Any]]:
    """Every ``in_zone`` condition under ``loc``, parsed, with its location."""
    found: list[tuple[tuple[str | int, ...], Any]] = []
    stack = [loc]
    while stack:
        here = stack.pop()
        node = node_at(root, here)
        if isinstance(node, yaml.MappingNode):
            keys = {k.value: v for k, v in node.value}
            kind = keys.get("type")
            if isinstance(kind, yaml.ScalarNode) and kind.value == "in_zone":
                data = yaml.safe_load(yaml.serialize(node))
                found.append((here, InZone.model_validate(data)))
            for key, value in keys.items():
                if isinstance(value, yaml.MappingNode | yaml.SequenceNode):
                    stack.append((*here, key))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((*here, i) for i in range(len(node.value)))
    return found

