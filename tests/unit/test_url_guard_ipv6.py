"""Issue 12, defect 6: IPv6 forms that embed an IPv4 address pass
`ipaddress.is_global`; the guard refuses them unless the IPv4 address is
public. IPv6 literal hosts are sent bracketed in `Host`."""

from __future__ import annotations

import pytest

from codat_authflow.delivery.sender import host_header
from codat_authflow.delivery.url_guard import UnsafeURL, check_url


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",  # IPv4-compatible
        "::10.0.0.1",
        "::ffff:0:127.0.0.1",  # SIIT
        "::ffff:0:169.254.169.254",
        "64:ff9b::127.0.0.1",  # NAT64
        "64:ff9b::192.168.1.1",
        "64:ff9b:1::7f00:1",  # local-use NAT64
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "2001:0:7f00:1::1",  # Teredo, server 127.0.0.1
        "2001:0:808:808:0:0:f5ff:fffe",  # Teredo, client 10.0.0.1
    ],
)
def test_ipv4_embedding_forms_of_private_addresses_are_refused(address):
    with pytest.raises(UnsafeURL, match="non-public"):
        check_url(f"http://[{address}]/hooks", allow_private=False)


@pytest.mark.parametrize("address", ["::8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1"])
def test_the_same_forms_of_a_public_address_are_allowed(address):
    assert check_url(f"http://[{address}]/hooks", allow_private=False).host == address


def test_ipv6_literal_hosts_are_bracketed_in_host():
    assert host_header("2606:4700::1111", 443) == "[2606:4700::1111]"
    assert host_header("2606:4700::1111", 8443) == "[2606:4700::1111]:8443"
    assert host_header("hooks.example.com", 8443) == "hooks.example.com:8443"
    assert host_header("hooks.example.com", 80) == "hooks.example.com"
