"""The ``ngsi-ld`` connector: FIWARE Smart Data Models entities (AirQualityObserved,
TrafficFlowObserved) in key-values or normalized form (NGSI-v2 or NGSI-LD), validated
against the official JSON Schemas shipped with citywatch, resolved offline.

One documented relaxation: the upstream AirQualityObserved schema types ``tsp`` as an
integer while the model's own key-values example carries ``tsp: 73.3``; total suspended
particulates in µg/m³ are not naturally integral, so citywatch accepts any number for
``tsp`` (the shipped schema file is unchanged; the relaxation is applied when loading).

Upstream examples that break their own schema are rejected with the reason, e.g.
AirQualityObserved ``example-normalized.json`` (``precipitation`` is a Boolean) and
``example-normalized.jsonld`` (``windDirection`` 186 > 180).

Config: ``path`` (file or glob; a file holds one entity, a JSON array of entities, or
JSON Lines) or ``url``; ``timezone`` for times without an offset (default UTC); ``name``.

Example:
    >>> to_key_values({"id": "x", "type": "AirQualityObserved",
    ...                "no2": {"type": "Property", "value": 69, "unitCode": "GQ"}})
    {'id': 'x', 'type': 'AirQualityObserved', 'no2': 69}
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from jsonschema import Draft202012Validator
from pydantic import Field, field_validator
from referencing import Registry, Resource

from citywatch.connectors.base import CountingCheckpoint, Source, SourceItem
from citywatch.connectors.config import PathOrUrl, expand, read_documents, validate_config
from citywatch.connectors.mapping import TimeMap
from citywatch.streams.envelope import AttributeValue, EnvelopeError, make_envelope

MODELS: dict[str, tuple[str, str]] = {
    "AirQualityObserved": ("environment", "air_quality.observed"),
    "TrafficFlowObserved": ("traffic", "traffic.flow.observed"),
}
SHARED_REFS = {
    "https://smart-data-models.github.io/data-models/common-schema.json":
        "_shared/common-schema.json",
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/"
    "Environment-schema.json": "_shared/Environment-schema.json",
    "https://smart-data-models.github.io/dataModel.Alert/alert-schema.json":
        "_shared/alert-schema.json",
}
NOT_ATTRIBUTES = {"id", "type", "@context", "location", "dateObserved", "dateObservedFrom",
                  "dateObservedTo", "dateCreated", "dateModified"}


def _schema_file(relative: str) -> dict[str, Any]:
    text = files("citywatch.connectors").joinpath("schemas", "fiware", relative).read_text()
    return json.loads(text)


def _relax_tsp(node: Any) -> None:
    if isinstance(node, dict):
        tsp = node.get("properties", {}).get("tsp") if isinstance(node.get("properties"),
                                                                   dict) else None
        if isinstance(tsp, dict) and tsp.get("type") == "integer":
            tsp["type"] = "number"
        for value in node.values():
            _relax_tsp(value)
    elif isinstance(node, list):
        for value in node:
            _relax_tsp(value)


@cache
def validator(model: str) -> Draft202012Validator:
    """The JSON Schema validator of a model, with ``$ref``s resolved to shipped files."""
    registry: Registry = Registry()
    for uri, relative in SHARED_REFS.items():
        registry = registry.with_resource(uri, Resource.from_contents(_schema_file(relative)))
    schema = _schema_file(f"{model}/schema.json")
    if model == "AirQualityObserved":
        _relax_tsp(schema)
    return Draft202012Validator(schema, registry=registry)


def _unwrap(value: Any) -> Any:
    if isinstance(value, dict) and "@value" in value:
        return value["@value"]
    return value


def to_key_values(entity: dict[str, Any]) -> dict[str, Any]:
    """Key-values form of an entity in any form: key-values, NGSI-v2 or NGSI-LD
    normalized, or the GeoJSON Feature representation."""
    if entity.get("type") == "Feature" and isinstance(entity.get("properties"), dict):
        entity = {**entity["properties"], "id": entity.get("id"),
                  "location": entity.get("geometry")}
    out: dict[str, Any] = {}
    for key, value in entity.items():
        if key == "@context":
            continue
        if (isinstance(value, dict) and "type" in value
                and ("value" in value or "object" in value) and key not in {"id", "type"}):
            value = value.get("value", value.get("object"))
        out[key] = _unwrap(value)
    return out


class NgsiConfig(PathOrUrl):
    name: str = Field(default="ngsi-ld", pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return TimeMap(field="x", timezone=value).timezone


def _observed(kv: dict[str, Any], zone: str) -> datetime:
    text = kv.get("dateObservedTo") or kv.get("dateObserved")
    if not isinstance(text, str):
        raise EnvelopeError("missing", field="dateObserved")
    text = text.split("/")[-1]
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EnvelopeError(f"{text!r} is not an ISO 8601 time", field="dateObserved") from None
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(zone))


def entity_envelope(entity: Any, *, source: str, timezone: str = "UTC") -> Any:
    """Validate one entity and map it to an envelope; errors name the field."""
    if not isinstance(entity, dict):
        raise EnvelopeError("an entity must be a JSON object")
    kv = to_key_values(entity)
    model = kv.get("type")
    if model not in MODELS:
        raise EnvelopeError(f"unsupported entity type {model!r} (supported: "
                            f"{', '.join(MODELS)})", field="type")
    errors = sorted(validator(model).iter_errors(kv), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = ".".join(map(str, first.path)) or None
        raise EnvelopeError(f"{first.message} (FIWARE {model} schema)", field=where)
    domain, kind = MODELS[model]
    location = kv.get("location")
    attributes: dict[str, AttributeValue] = {
        k: v for k, v in kv.items()
        if k not in NOT_ATTRIBUTES and isinstance(v, str | int | float | bool)}
    return make_envelope(source=source, source_record_id=str(kv["id"]), domain=domain,
                         kind=kind, time=_observed(kv, timezone), entity_id=str(kv["id"]),
                         geometry=location if isinstance(location, dict) else None,
                         attributes=attributes)


class NgsiLdSource(CountingCheckpoint, Source):
    """FIWARE AirQualityObserved / TrafficFlowObserved entities into envelopes."""

    domain = "environment"
    summary = "FIWARE Smart Data Models entities (NGSI-LD, NGSI-v2, key-values), validated"

    def __init__(self, name: str = "ngsi-ld", paths: list[Path] | None = None,
                 url: str | None = None, timezone: str = "UTC") -> None:
        super().__init__(name)
        self.paths = paths or []
        self.url = url
        self.timezone = timezone

    @classmethod
    def from_config(cls, config: dict[str, Any], base_dir: Path) -> NgsiLdSource:
        parsed = validate_config(NgsiConfig, config, source="")
        paths = expand(base_dir, parsed.path) if parsed.path is not None else []
        return cls(parsed.name, paths=paths, url=parsed.url, timezone=parsed.timezone)

    def entities(self) -> Iterator[tuple[str, Any, str | None]]:
        """``(locator, entity, parse error)`` for every entity of every input."""
        for name, content, error in read_documents(self.paths, self.url):
            if content is None:
                yield name, "", error
                continue
            text = content.decode("utf-8", "replace")
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                lines = [ln for ln in text.splitlines() if ln.strip()]
                for number, line in enumerate(text.splitlines(), start=1):
                    if not line.strip():
                        continue
                    try:
                        yield f"{name}:{number}", json.loads(line), None
                    except json.JSONDecodeError as exc:
                        yield f"{name}:{number}", line, f"not valid JSON: {exc.msg}"
                if not lines:
                    yield name, text, "empty input"
                continue
            items = data if isinstance(data, list) else [data]
            for i, entity in enumerate(items):
                yield (f"{name}[{i}]" if isinstance(data, list) else name), entity, None

    def run(self) -> Iterator[SourceItem]:
        yield from self.counted(self._items())

    def _items(self) -> Iterator[SourceItem]:
        for locator, entity, error in self.entities():
            if not self.running:
                return
            raw = entity if isinstance(entity, str) else json.dumps(entity)
            if error is not None:
                yield self.reject(error, locator=locator, raw=raw)
                continue
            try:
                yield entity_envelope(entity, source=self.name, timezone=self.timezone)
            except EnvelopeError as exc:
                yield self.reject(exc, locator=locator, raw=raw)
