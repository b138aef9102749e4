"""Request limits checked before anything is parsed or authenticated.

An ASGI middleware, so it runs before FastAPI reads a body or resolves a token:

* URL (path and query string) longer than ``max_url_bytes`` → ``414``;
* request headers together larger than ``max_header_bytes`` → ``431``;
* a NUL character in the URL → ``422`` (no store can compare text holding one);
* a ``Content-Length`` above ``max_body_bytes`` (or the path's own limit in
  ``body_limits``, e.g. rule proposals carrying zone files) → ``413`` at once, unread; a
  body without a length (chunked) is counted as it arrives and refused with ``413`` as
  soon as it passes the limit, so memory never holds more than the limit.

``413`` responses close the connection. ``citywatch serve`` enforces the URL and header
limits already while reading the request head (see ``citywatch.ops.api.server``); the
checks here cover any other ASGI server.

Example:
    >>> from fastapi import FastAPI
    >>> app = RequestLimits(FastAPI(), max_body_bytes=1_000_000, max_url_bytes=8192,
    ...                     max_header_bytes=32768)
    >>> app.max_body_bytes
    1000000
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body passes the limit; FastAPI answers it."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes",
                         headers={"Connection": "close"})


async def refuse(send: Send, status: int, detail: Any, *,
                 headers: dict[str, str] | None = None) -> None:
    """Answer with ``{"detail": ...}`` and ``status`` without calling the app."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"),
           (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """The limits above as an ASGI middleware around ``app``."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_url_bytes: int,
                 max_header_bytes: int, body_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_limits = body_limits or {}
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8", "replace")
        query: bytes = scope.get("query_string", b"")
        if len(path) + len(query) > self.max_url_bytes:
            await refuse(send, 414, f"URL longer than {self.max_url_bytes} bytes")
            return
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_header_bytes:
            await refuse(send, 431, f"request headers larger than {self.max_header_bytes} "
                                    "bytes")
            return
        if "\x00" in scope["path"] or b"%00" in query.lower() or b"\x00" in query:
            await refuse(send, 422, [{"type": "value_error", "loc": ["query"],
                                      "msg": "NUL characters are not allowed in the URL"}])
            return
        limit = self.body_limits.get(scope["path"], self.max_body_bytes)
        length = next((v for k, v in headers if k == b"content-length"), None)
        if length is not None:
            if not length.strip().isdigit():
                await refuse(send, 400, "Content-Length is not a number",
                             headers={"Connection": "close"})
                return
            if int(length) > limit:
                await refuse(send, 413, f"request body larger than {limit} bytes",
                             headers={"Connection": "close"})
                return
        await self.app(scope, self._counting(receive, limit), send)

    def _counting(self, receive: Receive, limit: int) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        return counted
