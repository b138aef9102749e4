"""The ``http`` connector: poll a URL on an interval.

Formats: ``json`` (a list of objects, or one under ``records_path``), ``geojson``
(a FeatureCollection), both through a declarative ``mapping``; ``cap`` (one CAP
message) and ``atom`` (an Atom feed whose entries embed CAP or link to it). Sends
``If-None-Match``/``If-Modified-Since`` from the last response and skips unchanged
content; skips records whose id it has already produced; backs off exponentially on
errors. Its checkpoint keeps the validators and the ids seen.

Example config:

    name: usgs-live
    url: https://example.org/all_hour.geojson
    format: geojson
    interval: 60
    mapping: {domain: disaster, kind: earthquake.reported, record_id: [id],
              entity_id: id, time: {field: time, unit: ms}, geometry: {from_record: true},
              attributes: {mag: {field: mag, type: float, optional: true}}}
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from lxml import etree
from pydantic import BaseModel, ConfigDict, Field, model_validator

from citywatch.connectors.base import Source, SourceItem
from citywatch.connectors.cap import CapSource
from citywatch.connectors.config import validate_config
from citywatch.connectors.file import geojson_records
from citywatch.connectors.mapping import FeedMapping
from citywatch.streams.envelope import Envelope, EnvelopeError

log = logging.getLogger(__name__)
ATOM = "{http://www.w3.org/2005/Atom}"


class HttpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    url: str = Field(pattern=r"^https?://")
    format: Literal["json", "geojson", "cap", "atom"]
    interval: float = Field(default=60.0, gt=0)
    max_polls: int | None = Field(default=None, ge=1, description="stop after N polls")
    timeout: float = Field(default=30.0, gt=0)
    max_backoff: float = Field(default=300.0, gt=0)
    records_path: str | None = None
    mapping: dict[str, Any] | None = None
    remember_ids: int = Field(default=100_000, ge=1)

    @model_validator(mode="after")
    def _mapping_for_records(self) -> HttpConfig:
        if self.format in {"json", "geojson"} and self.mapping is None:
            raise ValueError(f"format {self.format} needs a mapping")
        return self


class HttpSource(Source):
    """Polls one URL; yields new records as envelopes, bad ones as dead letters."""

    summary = "poll a URL (JSON, GeoJSON, CAP XML, Atom) with ETag, dedupe and backoff"

    def __init__(self, config: HttpConfig) -> None:
        self.config = config
        self.mapping = FeedMapping.for_feed(config.name, config.mapping)
        domain = self.mapping.domain if self.mapping else "disaster"
        super().__init__(config.name, domain)
        self._cap = CapSource(config.name)
        self.etag: str | None = None
        self.last_modified: str | None = None
        self._validators: tuple[str | None, str | None] = (None, None)
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.polls = 0
        self.errors = 0

    @classmethod
    def from_config(cls, config: dict[str, Any], base_dir: Path) -> HttpSource:
        return cls(validate_config(HttpConfig, config, source=""))

    def checkpoint(self) -> dict[str, Any]:
        return {"etag": self.etag, "last_modified": self.last_modified,
                "seen": list(self._seen)}

    def restore(self, state: dict[str, Any]) -> None:
        self.etag = state.get("etag")
        self.last_modified = state.get("last_modified")
        self._seen = OrderedDict.fromkeys(state.get("seen", []))

    def stop(self) -> None:
        super().stop()
        self._cap.stop()

    def fetch(self, url: str, conditional: bool = True) -> bytes | None:
        """The body, or ``None`` when the server says it has not changed (304)."""
        request = urllib.request.Request(url, headers={"User-Agent": "citywatch"})
        if conditional and self.etag:
            request.add_header("If-None-Match", self.etag)
        if conditional and self.last_modified:
            request.add_header("If-Modified-Since", self.last_modified)
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:  # noqa: S310
                if conditional:  # adopted once the whole body has been yielded
                    self._validators = (response.headers.get("ETag"),
                                        response.headers.get("Last-Modified"))
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 304:
                return None
            raise

    def run(self) -> Iterator[SourceItem]:
        delay = 0.0
        while self.running:
            if self.config.max_polls is not None and self.polls >= self.config.max_polls:
                return
            self.polls += 1
            try:
                body = self.fetch(self.config.url)
                delay = 0.0
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                self.errors += 1
                delay = min(self.config.max_backoff, max(1.0, delay * 2))
                log.warning("%s: %s failed (%s); retrying in %.0fs", self.name,
                            self.config.url, exc, delay)
                body = None
            if body is not None:
                for item in self.items(body):
                    if isinstance(item, Envelope):
                        if item.id in self._seen:
                            continue
                        self._remember(item.id)
                    yield item
                    if not self.running:
                        return
                self.etag = self._validators[0] or self.etag
                self.last_modified = self._validators[1] or self.last_modified
            self._sleep(delay or self.config.interval)

    def _remember(self, record_id: str) -> None:
        self._seen[record_id] = None
        while len(self._seen) > self.config.remember_ids:
            self._seen.popitem(last=False)

    def _sleep(self, seconds: float) -> None:
        if self.config.max_polls is not None and self.polls >= self.config.max_polls:
            return
        end = time.monotonic() + seconds
        while self.running and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))

    def items(self, body: bytes) -> Iterator[SourceItem]:
        """Envelopes and dead letters for one response body."""
        url = self.config.url
        fmt = self.config.format
        if fmt == "cap":
            yield from self._cap.from_document(body, url)
            return
        if fmt == "atom":
            yield from self._atom(body)
            return
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            yield self.reject(f"response is not JSON: {exc.msg}", locator=url,
                              raw=body[:2000].decode("utf-8", "replace"))
            return
        assert self.mapping is not None
        if fmt == "geojson":
            records = ((f"{url}#features[{i}]", r) for i, r in geojson_records(data))
        else:
            for part in (self.config.records_path or "").split("."):
                data = data.get(part, []) if part and isinstance(data, dict) else data
            records = ((f"{url}#[{i}]", r) for i, r in enumerate(
                data if isinstance(data, list) else [data]))
        for locator, record in records:
            if not isinstance(record, dict):
                yield self.reject("a record must be a JSON object", locator=locator,
                                  raw=json.dumps(record))
                continue
            try:
                yield self.mapping.to_envelope(record, locator=locator,
                                               received_at=datetime.now(UTC))
            except EnvelopeError as exc:
                yield self.reject(exc, locator=locator, raw=json.dumps(
                    {k: v for k, v in record.items() if k != "__geometry__"}, default=str))

    def _atom(self, body: bytes) -> Iterator[SourceItem]:
        url = self.config.url
        try:
            feed = etree.fromstring(body, parser=etree.XMLParser(resolve_entities=False,
                                                                 no_network=True))
        except etree.XMLSyntaxError as exc:
            yield self.reject(f"not well-formed Atom: {exc}", locator=url)
            return
        for i, entry in enumerate(feed.iter(f"{ATOM}entry")):
            locator = f"{url}#entry[{i}]"
            content = entry.find(f"{ATOM}content")
            embedded = [c for c in content] if content is not None else []
            if embedded:
                yield from self._cap.from_document(etree.tostring(embedded[0]), locator)
                continue
            link = next((ln.get("href") for ln in entry.iter(f"{ATOM}link")
                         if ln.get("href") and ln.get("rel", "alternate") == "alternate"),
                        None)
            if link is None:
                yield self.reject("entry has neither CAP content nor a link", locator=locator)
                continue
            try:
                document = self.fetch(urllib.parse.urljoin(url, link), conditional=False)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                yield self.reject(f"cannot fetch {link}: {exc}", locator=locator)
                continue
            yield from self._cap.from_document(document or b"", locator)
