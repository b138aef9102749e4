"""The ``file`` connector: replay CSV, JSON Lines, GeoJSON or Parquet files through a
declarative mapping, as fast as possible or paced by event time (``speed: N`` = N× real
time). ``path`` may be a glob; files are read in name order.

Example:
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "v.csv").write_text("t,v\\n2024-01-01T00:00:00Z,5\\n2024-01-01T01:00:00Z,x\\n")
    >>> source = FileSource.from_config({"name": "demo", "domain": "traffic",
    ...     "kind": "traffic.volume", "path": "v.csv", "record_id": ["t"],
    ...     "entity_id": {"const": "c1"}, "time": {"field": "t"},
    ...     "attributes": {"volume": {"field": "v", "type": "int"}}}, base_dir=d)
    >>> [type(x).__name__ for x in source.run()]
    ['Envelope', 'DeadLetter']
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec
from pydantic import Field

from citywatch.connectors.base import Source, SourceItem
from citywatch.connectors.config import (
    ConnectorConfigError,
    expand,
    read_config,
    resolve,
    validate_config,
)
from citywatch.connectors.mapping import FeedMapping, JoinMap
from citywatch.streams.envelope import Envelope, EnvelopeError

FeedConfigError = ConnectorConfigError
logger = logging.getLogger(__name__)


class FileConfig(FeedMapping):
    """A feed mapping plus replay options."""

    speed: float | None = Field(default=None, gt=0,
                                description="replay at N× real time by event time; "
                                            "unset = as fast as possible")
    order: Literal["file", "event_time"] = Field(
        default="file", description="'event_time' reads the file (or every file of the "
                                    "glob) in event-time order: for feeds published newest "
                                    "first")


def load_feed(path: Path) -> FileConfig:
    """Read a feed config YAML; relative ``path``/``join.path`` resolve against its folder."""
    return _resolved(validate_config(FileConfig, read_config(path), source=str(path)),
                     path.parent)


def _resolved(config: FileConfig, base_dir: Path) -> FileConfig:
    update: dict[str, Any] = {}
    if config.path is not None:
        update["path"] = resolve(base_dir, config.path)
    if config.join is not None:
        update["join"] = config.join.model_copy(update={"path": resolve(base_dir,
                                                                        config.join.path)})
    return config.model_copy(update=update) if update else config


def _read_join(join: JoinMap) -> dict[str, dict[str, str]]:
    with join.path.open(newline="", encoding=join.encoding) as fh:
        return {row[join.key]: row for row in csv.DictReader(fh)}


def _raw_text(record: dict[str, Any]) -> str:
    return msgspec.json.encode({k: v for k, v in record.items() if k != "__geometry__"},
                               enc_hook=str).decode()


class RawRecord(NamedTuple):
    """One record read from a file: its data, or the reason it could not be parsed."""

    locator: str
    data: dict[str, Any] | None
    error: str | None = None
    raw: str = ""


class FileSource(Source):
    """Replays files through a :class:`FeedMapping`, in file order.

    Every record becomes an envelope or a dead letter whose locator is ``file:line``
    (CSV, JSON Lines), ``file#features[i]`` (GeoJSON) or ``file#rows[i]`` (Parquet).
    Checkpoints count the records done per file, so a restart skips them.
    """

    summary = "CSV, JSON Lines, GeoJSON or Parquet files through a declarative mapping"

    def __init__(self, mapping: FeedMapping, path: Path | None = None,
                 speed: float | None = None) -> None:
        super().__init__(name=mapping.name, domain=mapping.domain)
        self.mapping = mapping
        chosen = path or mapping.path
        if chosen is None:
            raise FeedConfigError(f"feed '{mapping.name}' has no path")
        self.paths = expand(Path("."), chosen)
        if not self.paths:
            raise FeedConfigError(f"feed '{mapping.name}': no file matches {chosen}")
        self.speed = speed if speed is not None else getattr(mapping, "speed", None)
        self.run_size = 100_000
        self.warn_when_backwards = False  # ``citywatch connect`` turns it on
        self._done: dict[str, int] = {}
        self._skip: dict[str, int] = {}

    @classmethod
    def from_config(cls, config: dict[str, Any], base_dir: Path) -> FileSource:
        parsed = _resolved(validate_config(FileConfig, config, source=""),
                           base_dir)
        return cls(parsed)

    @property
    def path(self) -> Path:
        return self.paths[0]

    def checkpoint(self) -> dict[str, Any]:
        return {"records_done": dict(self._done)}

    def restore(self, state: dict[str, Any]) -> None:
        self._skip = dict(state.get("records_done", {}))

    def records(self, path: Path) -> Iterator[RawRecord]:
        """Records of one file, in order, each with its locator."""
        name = path.name
        fmt = self.mapping.format
        if fmt == "csv":
            with path.open(newline="", encoding=self.mapping.encoding) as fh:
                reader = csv.reader(fh)
                header = next(reader, None) or []
                width = len(header)
                for row in reader:
                    if not row:
                        continue
                    if len(row) != width:
                        yield RawRecord(f"{name}:{reader.line_num}", None,
                                        f"{len(row)} fields where the header has {width}",
                                        ",".join(row))
                        continue
                    yield RawRecord(f"{name}:{reader.line_num}", dict(zip(header, row,
                                                                          strict=True)))
        elif fmt == "jsonl":
            with path.open(encoding=self.mapping.encoding) as fh:
                for number, line in enumerate(fh, start=1):
                    if line.strip():
                        yield _json_record(line, f"{name}:{number}")
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            for i, row in enumerate(table.to_pylist()):
                yield RawRecord(f"{name}#rows[{i}]", row)
        else:
            collection = json.loads(path.read_text(encoding=self.mapping.encoding))
            for i, record in geojson_records(collection):
                yield RawRecord(f"{name}#features[{i}]", record)

    def run(self) -> Iterator[SourceItem]:
        pace = _Pacer(self.speed) if self.speed else None
        ordered = getattr(self.mapping, "order", "file") == "event_time"
        items = (in_event_time_order(self._items(count=False), run_size=self.run_size)
                 if ordered else self._items(count=True))
        skip = self._skip.get(ORDERED, 0) if ordered else 0
        if ordered:
            self._done = {ORDERED: 0}
        backwards = (_Backwards(self.mapping.name)
                     if self.warn_when_backwards and not ordered else None)
        for item in items:
            if not self.running:
                return
            if ordered:
                self._done[ORDERED] += 1
                if self._done[ORDERED] <= skip:
                    continue
            if isinstance(item, Envelope):
                if backwards is not None:
                    backwards.see(item.time)
                if pace is not None:
                    pace.wait_for(item.time, lambda: self.running)
            yield item

    def _items(self, *, count: bool) -> Iterator[SourceItem]:
        """Envelopes and dead letters in file order; with ``count``, checkpointed per
        file (a restored run skips what was done)."""
        joined = _read_join(self.mapping.join) if self.mapping.join else None
        for path in self.paths:
            key = str(path)
            skip = self._skip.get(key, 0) if count else 0
            self._done[key] = 0
            for locator, record, error, raw in self.records(path):
                if not self.running:
                    return
                self._done[key] += 1
                if self._done[key] <= skip:
                    continue
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


ORDERED = "(event-time order)"
"""Checkpoint key of a feed read in event-time order: items yielded of the sorted stream."""


def in_event_time_order(items: Iterator[SourceItem], *, run_size: int = 100_000,
                        ) -> Iterator[SourceItem]:
    """Dead letters as they come, then every envelope by (event time, id).

    Memory stays bounded for inputs of any size: envelopes are sorted in runs of
    ``run_size``, each full run is spilled to a temporary file, and the runs are merged
    (an external merge sort). The order is deterministic, so a checkpoint that counts
    items yielded resumes exactly.

    Example:
        >>> from datetime import UTC, datetime
        >>> from citywatch.streams.envelope import make_envelope
        >>> newest_first = [make_envelope(source="s", source_record_id=str(h),
        ...     domain="disaster", kind="earthquake.reported", entity_id=str(h),
        ...     time=datetime(2024, 1, 1, h, tzinfo=UTC)) for h in (5, 3, 4, 1)]
        >>> [e.time.hour for e in in_event_time_order(iter(newest_first), run_size=2)]
        [1, 3, 4, 5]
    """
    decoder = msgspec.json.Decoder(Envelope)
    with tempfile.TemporaryDirectory(prefix="citywatch-order-") as folder:
        runs: list[Path] = []
        batch: list[Envelope] = []
        for item in items:
            if not isinstance(item, Envelope):
                yield item
                continue
            batch.append(item)
            if len(batch) >= run_size:
                run = Path(folder) / f"run{len(runs)}.jsonl"
                with run.open("wb") as fh:
                    for envelope in sorted(batch, key=_event_order):
                        fh.write(msgspec.json.encode(envelope) + b"\n")
                runs.append(run)
                batch = []
        batch.sort(key=_event_order)

        def read(run: Path) -> Iterator[Envelope]:
            with run.open("rb") as fh:
                for line in fh:
                    yield decoder.decode(line)

        yield from heapq.merge(*(read(run) for run in runs), batch, key=_event_order)


def _event_order(envelope: Envelope) -> tuple[datetime, str]:
    return envelope.time, envelope.id


class _Backwards:
    """Warns once when a feed read in file order runs backwards in event time (newest
    first): window rules would see most of it as late."""

    def __init__(self, feed: str, sample: int = 1000) -> None:
        self.feed, self.sample = feed, sample
        self.last: datetime | None = None
        self.seen = self.back = 0

    def see(self, moment: datetime) -> None:
        if self.seen > self.sample:
            return
        if self.last is not None:
            self.back += moment < self.last
        self.last = moment
        self.seen += 1
        if self.seen == self.sample or (self.seen > 20 and self.back > self.seen * 0.9):
            if self.back > self.seen / 2:
                logger.warning("feed %s: event times run backwards in %d of the first %d "
                               "records (newest first?): window and sequence rules will "
                               "find most of them late; set 'order: event_time' to read it "
                               "in time order", self.feed, self.back, self.seen)
            self.seen = self.sample + 1


class _Pacer:
    """Sleeps so that event time advances ``speed`` times faster than wall time."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.origin: tuple[datetime, float] | None = None

    def wait_for(self, event_time: datetime, running: Any) -> None:
        if self.origin is None:
            self.origin = (event_time, time.monotonic())
            return
        first, started = self.origin
        due = started + (event_time - first).total_seconds() / self.speed
        while running() and (delay := due - time.monotonic()) > 0:
            time.sleep(min(delay, 0.1))


def _json_record(line: str, locator: str) -> RawRecord:
    raw = line.rstrip("\n")
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        return RawRecord(locator, None, f"not valid JSON: {exc.msg}", raw)
    if not isinstance(value, dict):
        return RawRecord(locator, None, "a JSON Lines record must be an object", raw)
    return RawRecord(locator, value)


def geojson_records(collection: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Flat records of a FeatureCollection: properties, ``id``, and the geometry under
    ``__geometry__`` (what a mapping's ``geometry: {from_record: true}`` reads)."""
    for i, feature in enumerate(collection.get("features", [])):
        record = dict(feature.get("properties") or {})
        record.setdefault("id", feature.get("id"))
        record["__geometry__"] = _point_2d(feature.get("geometry"))
        yield i, record


def _point_2d(geometry: dict[str, Any] | None) -> dict[str, Any] | None:
    """GeoJSON Points keep lon/lat only (USGS adds depth as a third coordinate)."""
    if geometry and geometry.get("type") == "Point":
        coords = geometry.get("coordinates") or []
        return {"type": "Point", "coordinates": list(coords[:2])}
    return geometry
