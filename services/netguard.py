"""Outbound HTTP to addresses a tenant or a plugin chose: only public ones.

Webhooks and plugins' HTTP calls go to URLs tenants and partners configure: without these checks,
one could reach the platform's own services (the database, Redis, a cloud metadata endpoint) from
inside its network. The connection is pinned to the checked address, so a second DNS answer
cannot send it elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class HostRefused(Exception):
    """The host resolves to an address that is not public."""


class HostUnresolved(Exception):
    """The host does not resolve (DNS may be down for a while)."""


def address_refusal(address: IPAddress) -> str | None:
    """Why no tenant-chosen request may connect to ``address`` (e.g. "loopback"), or None for a
    public address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            address = embedded
    for what in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
        if getattr(address, f"is_{what}"):
            return what.replace("_", "-")
    if not address.is_global:  # shared (carrier-grade NAT) space and the like
        return "non-public"
    return None


async def resolve_public(host: str, port: int) -> IPAddress:
    """Resolve ``host`` and check every address it resolves to; the first one, to connect to.

    Raises HostRefused when any address is not public (a name that resolves to both a public and a
    private address is refused too), HostUnresolved when the name does not resolve.
    """
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolved(f"host {host!r} does not resolve: {exc}") from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 scope id
        refused = address_refusal(address)
        if refused is not None:
            raise HostRefused(f"{host!r} resolves to {address}, a {refused} address")
        addresses.append(address)
    if not addresses:
        raise HostUnresolved(f"host {host!r} resolves to no address")
    return addresses[0]


def pinned_target(url: str, address: IPAddress) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL to request so the connection goes to the checked ``address`` (no second DNS lookup
    that could answer differently), with the ``Host`` header and the TLS server name of the original
    host, so virtual hosting and certificate checks see the real name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    original = host if not parts.port else f"{host}:{parts.port}"
    if ":" in host and not host.startswith("["):
        original = f"[{host}]" if not parts.port else f"[{host}]:{parts.port}"
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), {"Host": original}, extensions
