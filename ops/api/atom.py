"""Atom 1.0 feed of CAP alerts, one entry per alert with the CAP message as content.
Text and attributes are made XML-safe (:func:`~citywatch.ops.cap.xml_safe`), so one odd
character in an alert cannot break a team's whole feed.

Example:
    >>> atom_feed("air", [], lambda a: b"", base_url="http://x")[:38]
    b"<?xml version='1.0' encoding='UTF-8'?>"
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from citywatch.ops.cap import cap_time, xml_safe

ATOM_NS = "http://www.w3.org/2005/Atom"


def _sub(parent: etree._Element, tag: str, text: str | None = None,
         **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ATOM_NS}}}{tag}",
                               **{k: xml_safe(v) for k, v in attrs.items()})
    if text is not None:
        element.text = xml_safe(text)
    return element


def atom_feed(team: str, alerts: Sequence[Any], cap: Callable[[Any], bytes], *,
              base_url: str) -> bytes:
    """The feed for ``team`` from ``alerts`` (newest first); ``cap`` renders one alert."""
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})
    _sub(feed, "id", f"urn:citywatch:feed:{team}")
    _sub(feed, "title", f"citywatch alerts for {team}")
    updated = max((a.raised_at for a in alerts), default=datetime.now(UTC))
    _sub(feed, "updated", cap_time(updated))
    _sub(feed, "link", rel="self", href=f"{base_url}/feeds/{team}.atom")
    author = _sub(feed, "author")
    _sub(author, "name", "citywatch")
    for alert in alerts:
        entry = _sub(feed, "entry")
        _sub(entry, "id", f"urn:uuid:{alert.id}")
        _sub(entry, "title", alert.message[:200])
        _sub(entry, "updated", cap_time(alert.raised_at))
        _sub(entry, "link", rel="alternate", type="application/cap+xml",
             href=f"{base_url}/alerts/{alert.id}/cap")
        _sub(entry, "category", term=alert.category)
        content = _sub(entry, "content", type="application/cap+xml")
        content.append(etree.fromstring(cap(alert)))
    return etree.tostring(feed, xml_declaration=True, encoding="UTF-8", pretty_print=True)
