"""The SSRF guard: which URLs and which peer addresses a capture may reach.

Threat model: a submitted URL, a redirect, a subresource link or a DNS answer is chosen
by whoever controls the target site, and the archiver runs inside an operator's network.
Without this guard an investigator (or a hostile page) could make the archiver fetch the
cloud metadata service (credentials), an admin panel on the LAN or a service on
loopback, and seal the answer into an "evidence" file. So:

* only ``http`` and ``https`` URLs are fetched (``file:``, ``ftp:``, ``gopher:`` … are
  refused before anything is opened);
* the host is resolved once, **every** address it resolves to must be globally routable,
  and the connection is then made to that exact, checked address (no second lookup, so
  a DNS answer that changes between check and use, "DNS rebinding", cannot slip in);
* the check runs at connect time for every connection, so it covers every redirect hop
  and every subresource without anyone having to remember to call it.

The classifier is pure (no network), so it is unit-tested address by address.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from archiver.errors import FetchRefused
from archiver.recorder.addresses import AddressPolicy, IPAddress, non_global_reason
from archiver.urls import BadUrl
from archiver.urls import check_url as checked_url

ALLOWED_SCHEMES = frozenset({"http", "https"})
ALLOW_HINT = "set capture.allow_private_networks = true to allow"


def refusal(url: str, host: str, reason: str) -> FetchRefused:
    return FetchRefused(f"refusing to fetch {url}: {host} is {reason}; {ALLOW_HINT}")


def parse_ip(host: str) -> IPAddress | None:
    """The address when ``host`` is an IP literal (brackets allowed), else None."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_url(
    url: str, *, allow_private_networks: bool, policy: AddressPolicy | None = None
) -> httpx.URL:
    """Parse ``url`` and refuse what may never be fetched, before any socket is opened.

    The URL first passes :func:`archiver.urls.check_url` as a URL found during a
    capture: a user name or password is removed (what is fetched never carries one).

    Raises :class:`FetchRefused` for what that check refuses (a scheme other than
    http/https, a URL without a valid host, control characters, …), or (unless
    ``allow_private_networks``) a literal IP that is not global.
    """
    try:
        url = checked_url(url, userinfo="strip").url
    except BadUrl as exc:
        raise FetchRefused(f"refusing to fetch: {exc}") from exc
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise FetchRefused(f"refusing to fetch {url!r}: not a valid URL ({exc})") from exc
    if parsed.scheme not in ALLOWED_SCHEMES:
        scheme = parsed.scheme or "(none)"
        raise FetchRefused(
            f"refusing to fetch {url}: scheme {scheme!r} is not allowed, "
            "only http and https URLs can be captured"
        )
    if not parsed.host:
        raise FetchRefused(f"refusing to fetch {url}: the URL has no host")
    literal = parse_ip(parsed.host)
    if literal is not None and not allow_private_networks:
        reason = (policy or non_global_reason)(literal)
        if reason is not None:
            raise refusal(url, str(literal), reason)
    return parsed


@dataclass(frozen=True, slots=True)
class Resolved:
    """The addresses a host resolved to, in the resolver's order, all checked."""

    host: str
    addresses: tuple[IPAddress, ...]


def resolve_checked(
    url: str,
    host: str,
    port: int,
    *,
    allow_private_networks: bool,
    policy: AddressPolicy | None = None,
) -> Resolved:
    """Resolve ``host`` once and check every answer.

    Raises :class:`FetchRefused` when any address is not global (and private networks
    are not allowed); :class:`socket.gaierror` when the name does not resolve (the
    caller maps it, with every other network failure, in one place).
    """
    literal = parse_ip(host)
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        seen: dict[IPAddress, None] = {}
        for _family, _type, _proto, _canon, sockaddr in infos:
            # sockaddr[0] may carry an IPv6 zone ("fe80::1%eth0"); drop it to classify.
            seen.setdefault(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
        addresses = tuple(seen)
    if not allow_private_networks:
        # One bad answer refuses the host: a resolver that mixes a public and a private
        # address lets an attacker pick which one we reach.
        for address in addresses:
            reason = (policy or non_global_reason)(address)
            if reason is not None:
                shown = host if literal is not None else f"{host} ({address})"
                raise refusal(url, shown, reason)
    return Resolved(host, addresses)


def connect_checked(
    inner: httpcore.NetworkBackend,
    url: str,
    host: str,
    port: int,
    *,
    allow_private_networks: bool,
    policy: AddressPolicy | None,
    timeout: float | None,
    local_address: str | None = None,
    socket_options: Iterable[Any] | None = None,
) -> tuple[httpcore.NetworkStream, IPAddress]:
    """Resolve ``host`` once, check every answer, and connect to the first checked
    address that accepts: the address itself, never the name again, so there is no
    DNS-rebinding window. Returns the stream and the address it reached.

    Raises :class:`FetchRefused` (an address the guard refuses) or
    ``httpcore.ConnectError`` (no such name, no address accepted).
    """
    try:
        resolved = resolve_checked(
            url, host, port, allow_private_networks=allow_private_networks, policy=policy
        )
    except OSError as exc:  # socket.gaierror: the name does not resolve
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    last_error: httpcore.ConnectError | None = None
    for address in resolved.addresses:
        try:
            stream = inner.connect_tcp(
                str(address), port, timeout=timeout, local_address=local_address,
                socket_options=socket_options,
            )
        except httpcore.ConnectError as exc:  # try the next checked address
            last_error = exc
            continue
        return stream, address
    if last_error is None:
        raise httpcore.ConnectError(f"{host} resolved to no address")
    raise last_error
