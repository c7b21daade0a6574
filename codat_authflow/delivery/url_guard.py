"""SSRF guard for subscriber URLs.

A subscriber URL is supplied by an API client and fetched by our workers, from
inside the operator's network. Unless `ALLOW_PRIVATE_SUBSCRIBER_URLS=1`, every
address the host resolves to must be a public (globally routable) one:
loopback, private, link-local (cloud metadata at 169.254.169.254), shared,
reserved and multicast ranges are refused. The check runs when the URL is
registered and again before every delivery, and the delivery connects to the
address that was checked (see codat_authflow/delivery/sender.py), so a DNS answer that
changes in between (DNS rebinding) cannot redirect it.

`ipaddress.is_global` calls several IPv6 forms that carry an IPv4 address
global whatever that address is: IPv4-compatible `::a.b.c.d`, SIIT
`::ffff:0:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16` and Teredo
`2001::/32`. Each is refused unless every IPv4 address it embeds is itself
public; the local-use NAT64 prefix `64:ff9b:1::/48` (where the IPv4 address
sits depends on the operator's prefix length) is refused outright.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


class UnsafeURL(ValueError):
    """The URL may not be used as a subscriber endpoint; the message says why."""


@dataclass(frozen=True)
class CheckedURL:
    url: str
    scheme: str
    host: str
    port: int
    address: str  # the resolved IP the delivery must connect to


_V4_IN_LOW_32_BITS = (
    ipaddress.ip_network("::/96"),  # IPv4-compatible (deprecated), `::` and `::1` included
    ipaddress.ip_network("::ffff:0:0/96"),  # IPv4-mapped
    ipaddress.ip_network("::ffff:0:0:0/96"),  # SIIT, IPv4-translated
    ipaddress.ip_network("64:ff9b::/96"),  # NAT64, well-known prefix
)
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address] | None:
    """The IPv4 addresses an IPv6 address carries (None: it carries none)."""
    if any(address in net for net in _V4_IN_LOW_32_BITS):
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address in _SIX_TO_FOUR:
        return [ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)]
    if address in _TEREDO:
        server = ipaddress.IPv4Address((int(address) >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~int(address) & 0xFFFFFFFF)
        return [server, client]
    return None


def _blocked(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        if address in _NAT64_LOCAL:
            return True
        carried = embedded_ipv4(address)
        if carried is not None:
            return any(_blocked(v4) for v4 in carried)
    return not address.is_global or address.is_multicast


def check_url(url: str, *, allow_private: bool) -> CheckedURL:
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeURL(f"url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"url is malformed: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeURL("url must use http or https")
    if not parts.hostname:
        raise UnsafeURL("url must name a host")
    if parts.username or parts.password:
        raise UnsafeURL("url must not carry credentials")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURL(f"host {parts.hostname!r} does not resolve") from exc
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not allow_private:
        blocked = sorted({str(a) for a in addresses if _blocked(a)})
        if blocked:
            raise UnsafeURL(
                f"host {parts.hostname!r} resolves to a non-public address ({', '.join(blocked)}); "
                "set ALLOW_PRIVATE_SUBSCRIBER_URLS=1 to allow private networks"
            )
    return CheckedURL(
        url=url, scheme=parts.scheme, host=parts.hostname, port=port, address=str(addresses[0])
    )
