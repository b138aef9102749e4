"""Connector discovery through the ``citywatch.connectors`` entry-point group.

Built-in connectors register there too (see ``pyproject.toml``), so built-ins and
third-party plug-ins are found the same way. A plug-in package declares::

    [project.entry-points."citywatch.connectors"]
    my-feed = "my_package.module:MyFeedSource"

Example:
    >>> sorted(available())[:3]
    ['cap', 'file', 'http']
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

from citywatch.connectors.base import Source

ENTRY_POINT_GROUP = "citywatch.connectors"


class UnknownConnector(LookupError):
    pass


@dataclass(frozen=True)
class ConnectorInfo:
    """One discoverable connector."""

    name: str
    target: str
    distribution: str

    @property
    def builtin(self) -> bool:
        return self.distribution == "citywatch"

    def load(self) -> type[Source]:
        for ep in entry_points(group=ENTRY_POINT_GROUP, name=self.name):
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Source)):
                raise TypeError(f"connector '{self.name}' ({self.target}) is not a Source")
            return cls
        raise UnknownConnector(self.name)


def available() -> dict[str, ConnectorInfo]:
    """Every registered connector by name."""
    found: dict[str, ConnectorInfo] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        found.setdefault(ep.name, ConnectorInfo(ep.name, ep.value, dist))
    return found


def load_connector(name: str) -> type[Source]:
    """The Source class registered as ``name``."""
    info = available().get(name)
    if info is None:
        known = ", ".join(sorted(available())) or "none"
        raise UnknownConnector(f"no connector named '{name}' (available: {known})")
    return info.load()
