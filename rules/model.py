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
    """``attribute <op> value``; events without a numeric ``attribute`` never match."""

    type: Literal["threshold"]
    attribute: str = Field(min_length=1)
    op: Literal[">", ">=", "<", "<=", "==", "!="]
    value: float


class InZone(_Strict):
    """The event lies in a zone of ``layer`` (any zone, or one of ``zones`` by name);
    ``outside: true`` inverts it."""

    type: Literal["in_zone"]
    layer: str
    zones: list[str] | None = None
    outside: bool = False


class AllOf(_Strict):
    """Every sub-condition holds."""

    type: Literal["all"]
    conditions: list[Condition] = Field(min_length=1)


class AnyOf(_Strict):
    """At least one sub-condition holds."""

    type: Literal["any"]
    conditions: list[Condition] = Field(min_length=1)


Condition = Annotated[Threshold | InZone | AllOf | AnyOf, Field(discriminator="type")]
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

    def zone_layers(self) -> list[str]:
        """Layers referenced by the condition, outermost first."""
        found: list[str] = []

        def walk(cond: Condition) -> None:
            if isinstance(cond, InZone):
                found.append(cond.layer)
            elif isinstance(cond, AllOf | AnyOf):
                for sub in cond.conditions:
                    walk(sub)

        walk(self.condition)
        return found

    @property
    def incident_layer(self) -> str | None:
        if self.alert.zone_layer:
            return self.alert.zone_layer
        layers = self.zone_layers()
        return layers[0] if layers else None


class ZoneLayerSpec(_Strict):
    """A zone layer file; ``path`` is relative to the rule file."""

    layer: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    path: Path
    name_field: str = "name"
    id_field: str | None = None


class RuleSet(_Strict):
    """A versioned rule file: zone layers and rules."""

    zones: list[ZoneLayerSpec] = []
    rules: list[Rule]

    @model_validator(mode="after")
    def _references(self) -> RuleSet:
        ids = [r.id for r in self.rules]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate rule id(s): {', '.join(dupes)}")
        layers = {z.layer for z in self.zones}
        for rule in self.rules:
            for layer in [*rule.zone_layers(), *filter(None, [rule.alert.zone_layer])]:
                if layer not in layers:
                    raise ValueError(f"rule '{rule.id}' uses unknown zone layer '{layer}' "
                                     f"(declared: {', '.join(sorted(layers)) or 'none'})")
        return self
