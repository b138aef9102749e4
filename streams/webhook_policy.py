"""Where webhooks may go: ``https`` to public addresses, plus an allow-list.

A subscription's webhook is a URL anyone with the operator role can set, and the worker
POSTs to it from inside the city's network. Without a policy that is a server-side
request forgery: ``http://169.254.169.254/`` (cloud metadata), the database port on
localhost, an internal admin page. :class:`WebhookPolicy` refuses, unless the host is on
the allow-list (``CITYWATCH_WEBHOOK_ALLOW``: host names, addresses or CIDR blocks):

* any scheme but ``https``;
* any address that is not globally routable: loopback, link-local (cloud metadata),
  private (RFC 1918, unique-local IPv6), shared, reserved, multicast, unspecified.

The API checks a URL when a subscription is saved (:meth:`WebhookPolicy.check_url`,
literal addresses and ``localhost``); the worker checks every address a host name
resolves to when it connects (:class:`GuardedResolver`, so a name that later resolves to
a refused address is caught), and every redirect target before following it.

Example:
    >>> policy = WebhookPolicy(allow=["127.0.0.1", "10.20.0.0/16"])
    >>> policy.check_url("http://169.254.169.254/latest/meta-data")
    'refused address 169.254.169.254 (link-local); allow it with CITYWATCH_WEBHOOK_ALLOW'
    >>> policy.check_url("http://hooks.example.org/x")
    'only https webhooks are allowed, unless the host is in CITYWATCH_WEBHOOK_ALLOW'
    >>> policy.check_url("http://10.20.3.4:8080/hook") is None
    True
    >>> policy.address_problem("8.8.8.8") is None
    True
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALLOW_VARIABLE = "CITYWATCH_WEBHOOK_ALLOW"


def _kind(address: IpAddress) -> str | None:
    """Why ``address`` is not a public destination, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _kind(address.ipv4_mapped)
    for kind in ("loopback", "link_local", "private", "multicast", "reserved",
                 "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "not globally routable"


class WebhookPolicy:
    """Which webhook destinations are allowed (see the module docs)."""

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.hosts: set[str] = set()
        self.networks: list[IpNetwork] = []
        for entry in (e.strip() for e in allow):
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    def allowed_host(self, host: str) -> bool:
        """``host`` (a name or an address) is on the allow-list."""
        host = host.lower().strip("[]").rstrip(".")
        if host in self.hosts:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def address_problem(self, address: str) -> str | None:
        """Why a connection to ``address`` is refused, or None when it may be made."""
        if self.allowed_host(address):
            return None
        kind = _kind(ipaddress.ip_address(address.strip("[]").split("%")[0]))
        if kind is None:
            return None
        return f"refused address {address} ({kind}); allow it with {ALLOW_VARIABLE}"

    def check_url(self, url: str) -> str | None:
        """Why ``url`` may not be a webhook, or None. Host names other than
        ``localhost`` are checked when the worker resolves them."""
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        if not host:
            return "the webhook URL has no host"
        if self.allowed_host(host):
            return None
        if host == "localhost" or host.endswith(".localhost"):
            return f"refused host {host} (loopback); allow it with {ALLOW_VARIABLE}"
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            problem = self.address_problem(host)
            if problem is not None:
                return problem
        if parts.scheme != "https":
            return f"only https webhooks are allowed, unless the host is in {ALLOW_VARIABLE}"
        return None


class RefusedDestination(OSError):
    """A webhook host that resolves only to refused addresses."""


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that drops the addresses ``policy`` refuses (and fails when
    none is left), so the address checked is the address connected to.

    Example:
        >>> connector = aiohttp.TCPConnector(                       # doctest: +SKIP
        ...     resolver=GuardedResolver(WebhookPolicy(["127.0.0.1"])))
    """

    def __init__(self, policy: WebhookPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        if self.policy.allowed_host(host):
            return found
        kept = [r for r in found if self.policy.address_problem(r["host"]) is None]
        if not kept:
            problems = {self.policy.address_problem(r["host"]) for r in found}
            raise RefusedDestination(f"{host}: " + "; ".join(sorted(p or "" for p in problems)))
        return kept

    async def close(self) -> None:
        await self.inner.close()

