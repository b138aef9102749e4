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
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from citywatch.rules.templates import template_problems
from citywatch.streams.envelope import Domain
from citywatch.streams.vocabulary import Category, Certainty, Severity, Urgency

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _seconds(value: Any) -> Any:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
        if match is None:
            raise ValueError(f"'{value}' is not a duration like 90s, 15m, 24h, 7d or 1w")
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]
Tolerance = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]
"""A duration that may be zero (seconds, or ``30m``, ``24h``)."""
DEFAULT_VALIDITY_SECONDS = 86400.0
"""A duration in seconds; YAML may write ``15m``, ``24h``, ``7d``."""


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
"""A stateless condition: decided by one event alone."""
Not.model_rebuild()
AllOf.model_rebuild()
AnyOf.model_rebuild()

Comparison = Literal[">", ">=", "<", "<=", "==", "!="]


class Window(_Strict):
    """An aggregate of ``attribute`` over event-time windows per group, compared with
    ``value`` when the window closes.

    Tumbling windows of ``size`` (or sliding ones when ``slide`` is given) close once the
    group's latest event time passes the window end plus ``allowed_lateness``; later
    events are counted as late and dead-lettered, never silently dropped. ``group_by`` is
    ``entity`` or ``zone:LAYER``; ``where`` selects the events that feed the window.
    """

    type: Literal["window"]
    attribute: str = Field(min_length=1)
    aggregate: Literal["avg", "min", "max", "sum", "count", "p95"]
    size: Duration
    slide: Duration | None = None
    allowed_lateness: float = Field(default=0.0, ge=0)
    group_by: str = Field(default="entity", pattern=r"^(entity|zone:[a-z0-9][a-z0-9_.-]*)$")
    op: Comparison
    value: float
    min_events: int = Field(default=1, ge=1)
    where: Condition | None = None

    @model_validator(mode="before")
    @classmethod
    def _lateness(cls, data: Any) -> Any:
        if isinstance(data, dict) and "allowed_lateness" in data:
            data = {**data, "allowed_lateness": _seconds(data["allowed_lateness"])}
        return data

    @model_validator(mode="after")
    def _slide(self) -> Window:
        if self.slide is not None and (self.slide > self.size
                                       or (self.size / self.slide) % 1 != 0):
            raise ValueError("slide must divide size (e.g. size 24h, slide 1h)")
        return self

    @property
    def zone_layer(self) -> str | None:
        return self.group_by.removeprefix("zone:") if self.group_by != "entity" else None


class RateOfChange(_Strict):
    """The change of ``attribute`` between an entity's consecutive events, per ``per``
    seconds (default one hour), compared with ``value`` (negative for a drop)."""

    type: Literal["rate_of_change"]
    attribute: str = Field(min_length=1)
    per: Duration = 3600.0
    op: Comparison
    value: float
    where: Condition | None = None


class Persistence(_Strict):
    """``condition`` holds on an entity's consecutive events ``count`` times, or for at
    least ``duration``; one alert per run of holding events."""

    type: Literal["persistence"]
    condition: Condition
    count: int | None = Field(default=None, ge=2)
    duration: Duration | None = None

    @model_validator(mode="after")
    def _one(self) -> Persistence:
        if (self.count is None) == (self.duration is None):
            raise ValueError("give exactly one of count or duration")
        return self


class Absence(_Strict):
    """No event (matching ``where``) from an entity for ``after``: a silent sensor.

    Silence is measured in event time: a gap between an entity's consecutive events, or
    the stream's latest event time passing the entity's last one by ``after``.
    """

    type: Literal["absence"]
    after: Duration
    where: Condition | None = None


class Geofence(_Strict):
    """An entity relative to zones of ``layer`` (all, or ``zones`` by name): ``inside``,
    ``outside``, ``enter`` (was outside, now inside) or ``exit`` (was inside, now
    outside). An entity's first position sets its state without an enter/exit."""

    type: Literal["geofence"]
    layer: str
    zones: list[str] | None = None
    event: Literal["inside", "outside", "enter", "exit"]


class CorrelateSide(_Strict):
    """One side of a correlation: which events, and how far from a zone they count."""

    domain: Domain
    kinds: list[str] | None = None
    condition: Condition | None = None
    near_m: float = Field(default=0.0, ge=0, le=500_000)


class Correlate(_Strict):
    """Events of both sides in the same zone of ``layer`` within ``within`` of each
    other, e.g. an earthquake within 50 km of a zone and a traffic drop in it. A side
    with ``near_m`` counts for every zone within that many metres of the event."""

    type: Literal["correlate"]
    layer: str
    within: Duration
    first: CorrelateSide
    second: CorrelateSide


class ForecastExceedance(_Strict):
    """Early warning: the forecast of ``series`` (a model in the registry) crosses
    ``value`` within ``horizon`` after an event's time. ``bound`` is the forecast
    (``yhat``) or the 80 % interval's ``upper`` (``lower`` for ``<`` thresholds).

    Alerts say when the crossing is expected; urgency is ``Expected`` when it is within
    the hour, ``Future`` when later (``Immediate`` when already under way); certainty is
    ``Likely`` when the forecast itself crosses, ``Possible`` when only the interval
    does. One alert per entity and crossing episode.
    """

    type: Literal["forecast_exceedance"]
    series: str = Field(min_length=1)
    entity: str | None = None
    """Only events of this entity (the one the series describes); default: all."""
    op: Literal[">", ">=", "<", "<="]
    value: float
    horizon: Duration
    bound: Literal["yhat", "upper", "lower"] = "upper"
    where: Condition | None = None


class Anomaly(_Strict):
    """The observed ``attribute`` lies outside the 80 % prediction interval of ``series``
    at the event's time on ``count`` consecutive events of an entity."""

    type: Literal["anomaly"]
    series: str = Field(min_length=1)
    entity: str | None = None
    """Only events of this entity (the one the series describes); default: all."""
    attribute: str = Field(min_length=1)
    count: int = Field(default=1, ge=1)
    where: Condition | None = None


StatefulCondition = (Window | RateOfChange | Persistence | Absence | Geofence | Correlate
                     | ForecastExceedance | Anomaly)
RuleCondition = Annotated[
    Threshold | Match | InZone | Proximity | Not | AllOf | AnyOf | Window | RateOfChange
    | Persistence | Absence | Geofence | Correlate | ForecastExceedance | Anomaly,
    Field(discriminator="type")]
"""A rule's top-level condition: stateless, or one stateful or forecast kind (whose
``where`` / ``condition`` are stateless)."""


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
    dedupe_key: str | None = None
    cooldown: Duration | None = None
    valid_for: Duration = Field(default=DEFAULT_VALIDITY_SECONDS, description=
                                "How long after its event the alert stays valid (CAP "
                                "<expires>); default 24 h.")
    until_clear: bool = False
    clear_when: Condition | None = None

    @field_validator("message")
    @classmethod
    def _safe_template(cls, value: str) -> str:
        problems = template_problems(value, None)
        if problems:
            raise ValueError("; ".join(problems))
        return value


class Rule(_Strict):
    """One rule: which events it looks at, the condition, and the alert it raises."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    description: str = ""
    domain: Domain
    kinds: list[str] | None = None
    condition: RuleCondition
    alert: AlertSpec
    enabled: bool = True

    @property
    def version(self) -> str:
        """Hash of the normalised definition: any change gives a new version. (Fields
        added to the language since, left at their defaults, are left out: versions of
        existing rules stay what they were.)"""
        data = self.model_dump(mode="json")
        if self.alert.valid_for == DEFAULT_VALIDITY_SECONDS:
            del data["alert"]["valid_for"]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def conditions(self) -> list[Condition]:
        """Every condition of the rule, outermost first."""
        return walk_conditions(self.condition)

    @property
    def stateful(self) -> bool:
        """Whether alerts depend on earlier events (state kept per key)."""
        alert = self.alert
        return (isinstance(self.condition, StatefulCondition) or alert.cooldown is not None
                or alert.until_clear or alert.clear_when is not None)

    def zone_layers(self) -> list[str]:
        """Zone layers referenced by the condition, outermost first."""
        layers = []
        for c in self.conditions():
            if isinstance(c, InZone | Geofence | Correlate):
                layers.append(c.layer)
            elif isinstance(c, Window) and c.zone_layer:
                layers.append(c.zone_layer)
        return layers

    def forecast_series(self) -> list[str]:
        """Registry series the rule scores against."""
        return [c.series for c in self.conditions()
                if isinstance(c, ForecastExceedance | Anomaly)]

    def site_layers(self) -> list[str]:
        return [c.sites for c in self.conditions() if isinstance(c, Proximity) and c.sites]

    @cached_property
    def incident_layer(self) -> str | None:
        if self.alert.zone_layer:
            return self.alert.zone_layer
        layers = self.zone_layers()
        return layers[0] if layers else None


def walk_conditions(cond: Any) -> list[Any]:
    """``cond`` and all its sub-conditions, depth first."""
    if isinstance(cond, AllOf | AnyOf):
        return [cond, *[c for sub in cond.conditions for c in walk_conditions(sub)]]
    if isinstance(cond, Not | Persistence):
        return [cond, *walk_conditions(cond.condition)]
    if isinstance(cond, Window | RateOfChange | Absence | ForecastExceedance | Anomaly) \
            and cond.where is not None:
        return [cond, *walk_conditions(cond.where)]
    if isinstance(cond, Correlate):
        return [cond, *[c for side in (cond.first, cond.second) if side.condition
                        for c in walk_conditions(side.condition)]]
    return [cond]


class ZoneLayerSpec(_Strict):
    """A zone layer file; ``path`` is relative to the rule file."""

    layer: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    path: Path
    name_field: str = "name"
    id_field: str | None = None
    crs: str | None = None
    """The CRS of the file's coordinates (``EPSG:2263``) when the file declares none or
    declares a wrong one; default: the file's own, or lon/lat."""

    @field_validator("crs")
    @classmethod
    def _known_crs(cls, value: str | None) -> str | None:
        return _checked_crs(value)


class SiteLayerSpec(_Strict):
    """Point (or any) features that proximity rules measure to; ``path`` as for zones."""

    layer: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    path: Path
    name_field: str = "name"
    crs: str | None = None
    """As for zone layers."""

    @field_validator("crs")
    @classmethod
    def _known_crs(cls, value: str | None) -> str | None:
        return _checked_crs(value)


def _checked_crs(value: str | None) -> str | None:
    if value is not None:
        from pyproj import CRS
        from pyproj.exceptions import CRSError

        try:
            CRS.from_user_input(value)
        except CRSError:
            raise ValueError(f"unknown CRS {value!r} (e.g. EPSG:4326, EPSG:2263)") from None
    return value


class RuleSet(_Strict):
    """A versioned rule file: zone layers, site layers and rules."""

    zones: list[ZoneLayerSpec] = []
    sites: list[SiteLayerSpec] = []
    rules: list[Rule]

    _digests: dict[str, str] = PrivateAttr(default_factory=dict)

    def with_layer_digests(self, digests: dict[str, str]) -> RuleSet:
        """This rule set, its version covering the layer files' content (``digests``:
        ``zones:<layer>`` / ``sites:<layer>`` → SHA-256 of the file)."""
        copy = self.model_copy()
        copy._digests = dict(digests)
        return copy

    @property
    def layer_digests(self) -> dict[str, str]:
        return dict(self._digests)

    @property
    def version(self) -> str:
        """Hash of the whole normalised rule set and of its layer files' content (when
        the loader read them; their file names otherwise)."""
        data = self.model_dump(mode="json", exclude={"zones", "sites"})
        for rule, dumped in zip(self.rules, data["rules"], strict=True):
            if rule.alert.valid_for == DEFAULT_VALIDITY_SECONDS:  # as in Rule.version
                del dumped["alert"]["valid_for"]
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        layers = json.dumps(  # a crs only when set: versions without one stay the same
            [[z.layer, self._digests.get(f"zones:{z.layer}", z.path.name),
              *([z.crs] if z.crs else [])] for z in self.zones]
            + [[s.layer, self._digests.get(f"sites:{s.layer}", s.path.name),
                *([s.crs] if s.crs else [])] for s in self.sites])
        return hashlib.sha256((canonical + layers).encode()).hexdigest()[:12]

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> RuleSet:
        if (info.context or {}).get("references") == "located":
            return self  # the loader reports them where they are used
        problems = [message for _, message in self.reference_problems()]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def reference_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(where it is used, what is wrong) for every duplicate rule id and every layer
        a rule uses but the set does not declare."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        seen: set[str] = set()
        layers = {z.layer for z in self.zones}
        sites = {s.layer for s in self.sites}
        for number, rule in enumerate(self.rules):
            if rule.id in seen:
                problems.append((("rules", number, "id"), f"duplicate rule id '{rule.id}'"))
            seen.add(rule.id)
            for layer in [*rule.zone_layers(), *filter(None, [rule.alert.zone_layer])]:
                if layer not in layers:
                    problems.append((("rules", number), f"rule '{rule.id}' uses unknown zone "
                                     f"layer '{layer}' (declared: "
                                     f"{', '.join(sorted(layers)) or 'none'})"))
            for layer in rule.site_layers():
                if layer not in sites:
                    problems.append((("rules", number), f"rule '{rule.id}' uses unknown site "
                                     f"layer '{layer}' (declared: "
                                     f"{', '.join(sorted(sites)) or 'none'})"))
        return problems
