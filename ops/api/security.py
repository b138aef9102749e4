"""Security headers on every response.

Suitable for an internal operations tool: a Content-Security-Policy that lets pages load
only what the server itself serves (no inline script, no CDN, no framing), no MIME
sniffing, no referrer leaving the tool. Cross-origin requests are refused by browsers
unless ``CITYWATCH_CORS_ORIGINS`` lists the origin (CORS is off by default).

Example:
    >>> from fastapi import FastAPI
    >>> dict(SecurityHeaders(FastAPI()).headers)[b"x-content-type-options"]
    b'nosniff'
"""

from __future__ import annotations

from citywatch.ops.api.limits import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


class SecurityHeaders:
    """Adds :data:`HEADERS` to every HTTP response of ``app`` (an ASGI middleware);
    ``image_origins`` (a tile server) may serve images too."""

    def __init__(self, app: ASGIApp, image_origins: tuple[str, ...] = ()) -> None:
        self.app = app
        headers = dict(HEADERS)
        if image_origins:
            headers["content-security-policy"] = CONTENT_SECURITY_POLICY.replace(
                "img-src 'self' data:", "img-src 'self' data: " + " ".join(image_origins))
        self.headers = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.headers if k not in present]
            await send(message)

        await self.app(scope, receive, with_headers)
