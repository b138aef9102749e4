"""The zones of the rule set in force, for checking what people name: a subscription to
"Bronxx" is refused with "did you mean 'Bronx'?", and "bronx" is filed as "Bronx".

The rule set in force is the store's live version (its layer files materialised from the
store), or the configured rule file while none has been applied. Zones are reloaded only
when the live version changes.

Example:
    >>> from citywatch.ops.settings import Settings
    >>> store = IncidentStore("sqlite://"); store.create_schema()
    >>> zones = LiveZones(store, Settings(database_url="sqlite://"))
    >>> zones.check(["bronx", "Brooklyn"])
    (['Bronx', 'Brooklyn'], [])
    >>> zones.check(["Bronxx"])[1]
    ["unknown zone 'Bronxx' (did you mean 'Bronx'?)"]
"""

from __future__ import annotations

import json
from typing import Any

import shapely

from citywatch.ops.settings import Settings
from citywatch.ops.store.rulesets import RuleSetBook
from citywatch.ops.store.store import IncidentStore
from citywatch.rules.engine import build_zone_index
from citywatch.rules.loader import load_ruleset
from citywatch.rules.templates import suggest


class LiveZones:
    """Zone ids and names of the live rule set's layers, matched without regard to case."""

    def __init__(self, store: IncidentStore, settings: Settings) -> None:
        self.book = RuleSetBook(store)
        self.settings = settings
        self._version: str | None = ""
        self._names: dict[str, str] = {}
        self._geojson = ""

    def _refresh(self) -> None:
        applied = self.book.current()
        version = applied.version if applied else None
        if version != self._version or not self._names:
            ruleset = (self.book.materialise(applied, self.settings.data_dir / "rulesets")
                       if applied else load_ruleset(self.settings.rules_path))
            names: dict[str, str] = {}
            features: list[dict[str, Any]] = []
            for layer in build_zone_index(ruleset).layers.values():
                names.update({zone_id.lower(): zone_id for zone_id in layer.zone_ids})
                names.update({name.lower(): name for name in layer.zone_names})
                features += [{"type": "Feature", "id": f"{layer.name}/{zone_id}",
                              "properties": {"layer": layer.name, "zone_id": zone_id,
                                             "name": name},
                              "geometry": shapely.geometry.mapping(
                                  shapely.set_precision(geometry, 1e-6))}
                             for zone_id, name, geometry in zip(
                                 layer.zone_ids, layer.zone_names, layer.geometries,
                                 strict=True)]
            self._version, self._names = version, names
            self._geojson = json.dumps({"type": "FeatureCollection", "features": features})

    def names(self) -> dict[str, str]:
        """Every zone id and name, lower-cased, to how the layer spells it (names win
        over ids that look the same)."""
        self._refresh()
        return self._names

    def geojson(self) -> str:
        """Every zone of the live rule set's layers as a GeoJSON FeatureCollection
        (``layer``, ``zone_id``, ``name``; coordinates to 1e-6°): the console's base
        map."""
        self._refresh()
        return self._geojson

    def check(self, zones: list[str]) -> tuple[list[str], list[str]]:
        """The zones as the layers spell them, and a problem for each unknown one."""
        names = self.names()
        spelled, problems = [], []
        for zone in zones:
            found = names.get(zone.lower())
            if found is None:
                hint = suggest(zone, set(names.values()), form="'{}'")
                problems.append(f"unknown zone '{zone}'{hint}")
            else:
                spelled.append(found)
        return spelled, problems
