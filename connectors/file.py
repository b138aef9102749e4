"""The ``file`` connector: replay CSV, JSON Lines or GeoJSON files through a mapping.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "v.csv").write_text("t,v\\n2024-01-01T00:00:00Z,5\\n2024-01-01T01:00:00Z,x\\n")
    >>> m = FeedMapping.model_validate({"name": "demo", "domain": "traffic",
    ...     "kind": "traffic.volume", "path": str(d / "v.csv"), "record_id": ["t"],
    ...     "entity_id": {"const": "c1"}, "time": {"field": "t"},
    ...     "attributes": {"volume": {"field": "v", "type": "int"}}})
    >>> [type(x).__name__ for x in FileSource(m).run()]
    ['Envelope', 'DeadLetter']
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import yaml
from pydantic import ValidationError

from citywatch.connectors.base import Source, SourceItem
from citywatch.connectors.mapping import FeedMapping, JoinMap
from citywatch.streams.envelope import EnvelopeError


class FeedConfigError(ValueError):
    """A feed configuration file that is not valid."""


def load_feed(path: Path) -> FeedMapping:
    """Read a feed mapping YAML; relative ``path``/``join.path`` are resolved against it."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        mapping = FeedMapping.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise FeedConfigError(f"{path}: {exc}") from None
    except ValidationError as exc:
        lines = [f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise FeedConfigError("\n".join(lines)) from None
    update: dict[str, Any] = {}
    if mapping.path is not None and not mapping.path.is_absolute():
        update["path"] = path.parent / mapping.path
    if mapping.join is not None and not mapping.join.path.is_absolute():
        update["join"] = mapping.join.model_copy(update={"path": path.parent / mapping.join.path})
    return mapping.model_copy(update=update) if update else mapping


def _read_join(join: JoinMap) -> dict[str, dict[str, str]]:
    with join.path.open(newline="", encoding=join.encoding) as fh:
        return {row[join.key]: row for row in csv.DictReader(fh)}


def _raw_text(record: dict[str, Any]) -> str:
    return msgspec.json.encode({k: v for k, v in record.items() if k != "__geometry__"}).decode()


class RawRecord(NamedTuple):
    """One record read from a file: its data, or the reason it could not be parsed."""

    locator: str
    data: dict[str, Any] | None
    error: str | None = None
    raw: str = ""


class FileSource(Source):
    """Replays one file through a :class:`FeedMapping`, in file order.

    Every record becomes an envelope or a dead letter whose locator is ``file:line``
    (CSV, JSON Lines) or ``file#features[i]`` (GeoJSON).
    """

    def __init__(self, mapping: FeedMapping, path: Path | None = None) -> None:
        super().__init__(name=mapping.name, domain=mapping.domain)
        self.mapping = mapping
        chosen = path or mapping.path
        if chosen is None:
            raise FeedConfigError(f"feed '{mapping.name}' has no path")
        self.path = chosen

    def records(self) -> Iterator[RawRecord]:
        """Records of the file, in order, each with its locator."""
        name = self.path.name
        fmt = self.mapping.format
        if fmt == "csv":
            with self.path.open(newline="", encoding=self.mapping.encoding) as fh:
                reader = csv.DictReader(fh)
                for row in reader:
                    yield RawRecord(f"{name}:{reader.line_num}", row)
        elif fmt == "jsonl":
            with self.path.open(encoding=self.mapping.encoding) as fh:
                for number, line in enumerate(fh, start=1):
                    if line.strip():
                        yield _json_record(line, f"{name}:{number}")
        else:
            collection = json.loads(self.path.read_text(encoding=self.mapping.encoding))
            for i, feature in enumerate(collection.get("features", [])):
                record = dict(feature.get("properties") or {})
                record.setdefault("id", feature.get("id"))
                record["__geometry__"] = _point_2d(feature.get("geometry"))
                yield RawRecord(f"{name}#features[{i}]", record)

    def run(self) -> Iterator[SourceItem]:
        joined = _read_join(self.mapping.join) if self.mapping.join else None
        for locator, record, error, raw in self.records():
            if not self.running:
                return
            if record is None:
                yield self.reject(error or "unreadable record", locator=locator, raw=raw)
                continue
            if joined is not None and self.mapping.join is not None:
                match = joined.get(str(record.get(self.mapping.join.key, "")))
                if match:
                    record = {**match, **record}
            try:
                yield self.mapping.to_envelope(record, locator=locator,
                                               received_at=datetime.now(UTC))
            except EnvelopeError as exc:
                yield self.reject(exc, locator=locator, raw=_raw_text(record))


def _json_record(line: str, locator: str) -> RawRecord:
    raw = line.rstrip("\n")
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return RawRecord(locator, None, f"not valid JSON: {exc.msg}", raw)
    if not isinstance(value, dict):
        return RawRecord(locator, None, "a JSON Lines record must be an object", raw)
    return RawRecord(locator, value)


def _point_2d(geometry: dict[str, Any] | None) -> dict[str, Any] | None:
    """GeoJSON Points keep lon/lat only (USGS adds depth as a third coordinate)."""
    if geometry and geometry.get("type") == "Point":
        coords = geometry.get("coordinates") or []
        return {"type": "Point", "coordinates": list(coords[:2])}
    return geometry
