"""``citywatch serve``: uvicorn with the request-head limits enforced while reading.

uvicorn's h11 parser answers a request head over 16 KB with ``400`` and closes the
connection under a client that is still sending, which the client sees as a connection
reset. :class:`GuardedH11Protocol` checks the head as it arrives instead: a request line
over the URL limit gets ``414``, a head over the header limit ``431``; nothing beyond the
limits is buffered. A refused request (and a ``413`` from
:class:`~citywatch.ops.api.limits.RequestLimits`) ends with a *lingering close*: the
answer is sent, the sending side shut, and what the client still sends is read and
dropped for up to :attr:`GuardedH11Protocol.linger_seconds`, so the client reads the
answer rather than a reset.

Example:
    >>> protocol = guarded_protocol(max_url_bytes=8192, max_header_bytes=32768)
    >>> protocol.max_url_bytes
    8192
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from citywatch.ops.api.security import HEADERS
from citywatch.ops.settings import Settings

REASONS = {400: "Bad Request", 414: "URI Too Long", 431: "Request Header Fields Too Large"}
REQUEST_LINE_EXTRA = 32  # method, spaces and "HTTP/1.1" around the URL


class _LingeringTransport:
    """The connection's transport, whose ``close`` lingers while the client is still
    sending a body nobody will read."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedH11Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def close(self) -> None:
        if self._protocol.conn.their_state is h11.SEND_BODY:
            self._protocol.linger()
        else:
            self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with head limits and lingering close (module docs)."""

    max_url_bytes = 8192
    max_header_bytes = 32768
    linger_seconds = 2.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head = b""
        self._lingering = False
        self._raw: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport  # type: ignore[assignment]
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self.conn.their_state is h11.IDLE:
            head = self._head + data
            status = self._head_problem(head)
            if status is not None:
                self._refuse(status)
                return
            self._head = head
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head = b""

    def _head_problem(self, head: bytes) -> int | None:
        line_end = head.find(b"\r\n")
        if (line_end if line_end >= 0 else len(head)) > self.max_url_bytes + REQUEST_LINE_EXTRA:
            return 414
        end = head.find(b"\r\n\r\n")
        if (end if end >= 0 else len(head)) - max(line_end, 0) > self.max_header_bytes:
            return 431
        return None

    def _refuse(self, status: int) -> None:
        limit = self.max_url_bytes if status == 414 else self.max_header_bytes
        what = "URL" if status == 414 else "request headers"
        body = json.dumps({"detail": f"{what} larger than {limit} bytes"}).encode()
        head = [f"HTTP/1.1 {status} {REASONS[status]}", "content-type: application/json",
                f"content-length: {len(body)}", "connection: close"]
        head += [f"{k}: {v}" for k, v in HEADERS.items()]
        self.logger.warning("refused a request from %s: %s", self.client, REASONS[status])
        assert self._raw is not None
        self._raw.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        self.linger()

    def linger(self) -> None:
        """Send what is buffered, shut the sending side, drop what still arrives, and
        close after :attr:`linger_seconds` (or when the client closes)."""
        if self._lingering or self._raw is None:
            return
        self._lingering = True
        self._unset_keepalive_if_required()
        raw = self._raw
        if raw.can_write_eof():
            raw.write_eof()
        raw.resume_reading()
        self.loop.call_later(self.linger_seconds, raw.close)

    def eof_received(self) -> bool | None:
        if self._lingering and self._raw is not None:
            self._raw.close()
        return None


def guarded_protocol(*, max_url_bytes: int, max_header_bytes: int,
                     ) -> type[GuardedH11Protocol]:
    """:class:`GuardedH11Protocol` with these limits."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {
        "max_url_bytes": max_url_bytes, "max_header_bytes": max_header_bytes})


def serve(settings: Settings) -> None:
    """Serve the responder API on ``settings.api_host:settings.api_port``."""
    from citywatch.ops.api.app import create_api

    config = uvicorn.Config(
        create_api(settings), host=settings.api_host, port=settings.api_port,
        log_level="info",
        http=guarded_protocol(max_url_bytes=settings.api_max_url_bytes,
                              max_header_bytes=settings.api_max_header_bytes),
        h11_max_incomplete_event_size=(settings.api_max_url_bytes
                                       + settings.api_max_header_bytes + 1024))
    uvicorn.Server(config).run()
