"""Which peer addresses a capture may reach: the classifier behind the SSRF guard.

Pure (no network, no HTTP library), so the archive can name its default policy without
loading the capture stack, and so every address class is unit-tested one by one. How and
when it is applied (after resolution, at connect time, on every redirect) is
:mod:`archiver.recorder.guard`'s business.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPolicy = Callable[[IPAddress], str | None]
"""Why an address is refused (a phrase after "<address> is"), or None to allow it."""


_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
# NAT64 (RFC 6052 well-known prefix, and the RFC 8215 local-use prefix): on a NAT64
# network 64:ff9b::a00:1 *is* 10.0.0.1, so the embedded IPv4 address is what we judge.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_METADATA = ipaddress.IPv4Address("169.254.169.254")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # ::ffff:127.0.0.1 reaches 127.0.0.1 on a dual-stack socket: judge the IPv4 inside.
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def non_global_reason(address: IPAddress) -> str | None:
    """Why ``address`` must not be fetched by default, or None when it is globally routable.

    The answer reads after the address: "127.0.0.1 is <reason>".
    """
    if isinstance(address, ipaddress.IPv6Address):
        inner = _embedded_ipv4(address)
        if inner is not None:
            reason = non_global_reason(inner)
            return None if reason is None else f"{reason} ({inner} embedded in IPv6)"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address == _METADATA:
        return "the cloud metadata address (link-local)"
    if address.is_link_local:
        return "a link-local address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "a shared carrier-grade NAT address (100.64.0.0/10)"
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.IPv6Network(
        "fc00::/7"
    ):
        return "a unique-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a globally routable address"
    return None
