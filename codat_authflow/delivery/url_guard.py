"""SSRF guard for subscriber URLs.

A subscriber URL is supplied by an API client and fetched by our workers, from
inside the operator's network. Unless `ALLOW_PRIVATE_SUBSCRIBER_URLS=1`, every
address the host resolves to must be a public (globally routable) one:
loopback, private, link-local (cloud metadata at 169.254.169.254), shared,
reserved and multicast ranges are refused. The check runs when the URL is
registered and again before every delivery, and the delivery connects to the
address that was checked (see codat_authflow/delivery/sender.py), so a DNS answer that
changes in between (DNS rebinding) cannot redirect it.
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


def _blocked(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
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
