"""The rule language: pydantic models that validate a YAML rule set.

Example:
    >>> rs = RuleSet.model_validate({"rules": [{
    ...     "id": "pm25-high", "domain": "environment",
    ...     "condition": {"type": "threshold", "attribute": "pm25", "op": ">", "value": 20},
    ...     "alert": {"severity": "Moderate", "category": "Env",
    ...               "message": "PM2.5 {pm25} at {entity_id}"}}]})
    >>> rs.rules[0].version == rs.rules[0].version and len(rs.rules[0].version)
    12
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from citywatch.streams.envelope import Domain

Severity = Literal["Extreme", "Severe", "Moderate", "Minor", "Unknown"]
Urgency = Literal["Immediate", "Expected", "Future", "Past", "Unknown"]
Certainty = Literal["Observed", "Likely", "Possible", "Unlikely", "Unknown"]
Category = Literal["Geo", "Met", "Safety", "Security", "Rescue", "Fire", "Health", "Env",
                   "Transport", "Infra", "CBRNE", "Other"]
SEVERITY_RANK: dict[str, int] = {"Unknown": 0, "Minor": 1, "Moderate": 2, "Severe": 3,
                                 "Extreme": 4}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Threshold(_Strict):
    """``attribute <op> value`` — or, for ``between``/``outside``, the attribute against
    the inclusive ``range: [low, high]``. Events without a numeric ``attribute`` never
    match."""

    type: Literal["threshold"]
    attribute: str = Field(min_length=1)
    op: Literal[">", ">=", "<", "<=", "==", "!=", "between", "outside"]
    value: float | None = None
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _operands(self) -> Threshold:
        if self.op in {"between", "outside"}:
            if self.range is None or self.value is not None:
                raise ValueError(f"op '{self.op}' takes range: [low, high] (and no value)")
            if self.range[0] > self.range[1]:
                raise ValueError("range must be [low, high] with low <= high")
        elif self.value is None or self.range is not None:
            raise ValueError(f"op '{self.op}' takes value (and no range)")
        return self


class Match(_Strict):
    """A text attribute equals one of ``values`` (exact, case-sensitive)."""

    type: Literal["match"]
    attribute: str = Field(min_length=1)
    values: list[str] = Field(min_length=1)


class InZone(_Strict):
    """The event lies in a zone of ``layer`` (any zone, or one of ``zones`` by name);
    ``outside: true`` inverts it."""

    type: Literal["in_zone"]
    layer: str
    zones: list[str] | None = None
    outside: bool = False


class Proximity(_Strict):
    """The event lies within ``within_m`` metres (geodesic, WGS84 ellipsoid) of a fixed
    ``point: [lon, lat]`` or of any feature of a site layer (``sites``)."""

    type: Literal["proximity"]
    within_m: float = Field(gt=0, le=20_000_000)
    point: tuple[float, float] | None = None
    sites: str | None = None

    @model_validator(mode="after")
    def _target(self) -> Proximity:
        if (self.point is None) == (self.sites is None):
            raise ValueError("give exactly one of point or sites")
        if self.point is not None and not (-180 <= self.point[0] <= 180
                                           and -90 <= self.point[1] <= 90):
            raise ValueError("point must be [lon, lat] in range")
        return self


class Not(_Strict):
    """The sub-condition does not hold."""

    type: Literal["not"]
    condition: Condition


class AllOf(_Strict):
    """Every sub-condition holds."""

    type: Literal["all"]
    conditions: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    """At least one sub-condition holds."""

    type: Literal["any"]
    conditions: list[Condition] = Field(min_length=1)


Condition = Annotated[Threshold | Match | InZone | Proximity | Not | AllOf | AnyOf,
                      Field(discriminator="type")]
Not.model_rebuild()
AllOf.model_rebuild()
AnyOf.model_rebuild()


class AlertSpec(_Strict):
    """What an alert raised by a rule says, in CAP 1.2 vocabulary.

    ``message`` is a template over the event's attributes plus ``entity_id``, ``zone``,
    ``time`` and ``kind``. ``zone_layer`` names the layer whose zone the alert (and its
    incident) is filed under.
    """

    severity: Severity
    urgency: Urgency = "Immediate"
    certainty: Certainty = "Observed"
    category: Category
    event: str | None = None
    message: str
    zone_layer: str | None = None


class Rule(_Strict):
    """One rule: which events it looks at, the condition, and the alert it raises."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    description: str = ""
    domain: Domain
    kinds: list[str] | None = None
    condition: Condition
    alert: AlertSpec
    enabled: bool = True

    @property
    def version(self) -> str:
        """Hash of the normalised definition: any change gives a new version."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def conditions(self) -> list[Condition]:
        """Every condition of the rule, outermost first."""
        return walk_conditions(self.condition)

    def zone_layers(self) -> list[str]:
        """Zone layers referenced by the condition, outermost first."""
        return [c.layer for c in self.conditions() if isinstance(c, InZone)]

    def site_layers(self) -> list[str]:
        return [c.sites for c in self.conditions() if isinstance(c, Proximity) and c.sites]

    @property
    def incident_layer(self) -> str | None:
        if self.alert.zone_layer:
            return self.alert.zone_layer
        layers = self.zone_layers()
        return layers[0] if layers else None


def walk_conditions(cond: Condition) -> list[Condition]:
    """``cond`` and all its sub-conditions, depth first."""
    if isinstance(cond, AllOf | AnyOf):
        return [cond, *[c for sub in cond.conditions for c in walk_conditions(sub)]]
    if isinstance(cond, Not):
        return [cond, *walk_conditions(cond.condition)]
    return [cond]


class ZoneLayerSpec(_Strict):
    """A zone layer file; ``path`` is relative to the rule file."""

    layer: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    path: Path
    name_field: str = "name"
    id_field: str | None = None


class SiteLayerSpec(_Strict):
    """Point (or any) features that proximity rules measure to; ``path`` as for zones."""

    layer: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    path: Path
    name_field: str = "name"


class RuleSet(_Strict):
    """A versioned rule file: zone layers, site layers and rules."""

    zones: list[ZoneLayerSpec] = []
    sites: list[SiteLayerSpec] = []
    rules: list[Rule]

    @property
    def version(self) -> str:
        """Hash of the whole normalised rule set."""
        canonical = json.dumps(self.model_dump(mode="json", exclude={"zones", "sites"}),
                               sort_keys=True, separators=(",", ":"))
        layers = json.dumps([[z.layer, z.path.name] for z in self.zones]
                            + [[s.layer, s.path.name] for s in self.sites])
        return hashlib.sha256((canonical + layers).encode()).hexdigest()[:12]

    @model_validator(mode="after")
    def _references(self) -> RuleSet:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule id(s): {', '.join(dupes)}")
        layers = {z.layer for z in self.zones}
        sites = {s.layer for s in self.sites}
        for rule in self.rules:
            for layer in [*rule.zone_layers(), *filter(None, [rule.alert.zone_layer])]:
                if layer not in layers:
                    raise ValueError(f"rule '{rule.id}' uses unknown zone layer '{layer}' "
                                     f"(declared: {', '.join(sorted(layers)) or 'none'})")
            for layer in rule.site_layers():
                if layer not in sites:
                    raise ValueError(f"rule '{rule.id}' uses unknown site layer '{layer}' "
                                     f"(declared: {', '.join(sorted(sites)) or 'none'})")
        return self
