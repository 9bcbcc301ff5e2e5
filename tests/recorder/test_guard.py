"""The SSRF guard, without network: address classes, URL schemes, connect-to-checked-IP."""

from __future__ import annotations

import ipaddress
from typing import Any

import httpcore
import pytest

from archiver.errors import FetchRefused
from archiver.recorder.addresses import non_global_reason
from archiver.recorder.guard import check_url, resolve_checked
from archiver.recorder.wire import Deadline, RecordingBackend, Wire


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "the cloud metadata address (link-local)"),
        ("169.254.1.1", "a link-local address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("172.31.255.255", "a private address"),
        ("192.168.1.1", "a private address"),
        ("100.64.0.1", "a shared carrier-grade NAT address (100.64.0.0/10)"),
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("192.0.2.1", "a private address"),  # TEST-NET-1, documentation only
        ("::1", "a loopback address"),
        ("::", "an unspecified address"),
        ("fe80::1", "a link-local address"),
        ("fc00::1", "a unique-local address"),
        ("fd12:3456::1", "a unique-local address"),
        ("ff02::1", "a multicast address"),
        ("::ffff:127.0.0.1", "a loopback address (127.0.0.1 embedded in IPv6)"),
        ("::ffff:169.254.169.254",
         "the cloud metadata address (link-local) (169.254.169.254 embedded in IPv6)"),
        ("64:ff9b::a00:1", "a private address (10.0.0.1 embedded in IPv6)"),
    ],
)
def test_non_global_addresses_are_refused_with_their_class(address: str, reason: str) -> None:
    """Each non-routable class is refused and named (IPv4-mapped/NAT64 unwrapped)."""
    assert non_global_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::6810:84e5",
                                     "::ffff:8.8.8.8"])
def test_global_addresses_are_allowed(address: str) -> None:
    """A globally routable address (v4, v6, v4-mapped) passes the guard."""
    assert non_global_reason(ipaddress.ip_address(address)) is None


def test_literal_loopback_url_is_refused_with_the_documented_message() -> None:
    """The refusal names URL, address and class, and says how to allow it."""
    with pytest.raises(FetchRefused) as caught:
        check_url("http://127.0.0.1:8080/", allow_private_networks=False)
    assert str(caught.value) == (
        "refusing to fetch http://127.0.0.1:8080/: 127.0.0.1 is a loopback address; "
        "set capture.allow_private_networks = true to allow"
    )


def test_literal_ipv6_metadata_url_is_refused() -> None:
    """A bracketed IPv6 literal wrapping the metadata address is refused."""
    with pytest.raises(FetchRefused, match=r"169\.254\.169\.254"):
        check_url("http://[::ffff:169.254.169.254]/latest/", allow_private_networks=False)


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.org/x", "gopher://example.org/", "data:text/plain,x",
     "javascript:alert(1)"],
)
def test_non_http_schemes_are_refused_up_front(url: str) -> None:
    """Only http and https can be captured, whatever private networks allow."""
    with pytest.raises(FetchRefused, match="only http and https URLs can be captured"):
        check_url(url, allow_private_networks=True)


def test_allow_private_networks_lets_literal_private_addresses_through() -> None:
    """The operator's switch allows private targets (still only http/https)."""
    assert check_url("http://10.0.0.1/", allow_private_networks=True).host == "10.0.0.1"


def test_a_name_resolving_to_loopback_is_refused_naming_host_and_address() -> None:
    """'localhost' is resolved and its address judged, and both are named."""
    with pytest.raises(FetchRefused) as caught:
        resolve_checked("http://localhost:9/", "localhost", 9, allow_private_networks=False)
    message = str(caught.value)
    assert message.startswith("refusing to fetch http://localhost:9/: localhost (")
    assert "is a loopback address; set capture.allow_private_networks = true to allow" in message


class _FakeBackend(httpcore.NetworkBackend):
    """Records where it was asked to connect; connects nowhere."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None, socket_options: Any = None
                    ) -> httpcore.NetworkStream:
        self.hosts.append(host)
        return httpcore.NetworkStream()


def test_backend_connects_to_the_checked_address_not_the_name(tmp_path: Any) -> None:
    """No second DNS lookup: the inner backend is given the IP that was checked."""
    inner = _FakeBackend()
    wire = Wire(tmp_path, limit=None)
    try:
        backend = RecordingBackend(url="http://localhost:9/", wire=wire, deadline=Deadline(5),
                                   allow_private_networks=True, inner=inner)
        backend.connect_tcp("localhost", 9)
    finally:
        wire.close()
    assert len(inner.hosts) == 1
    assert ipaddress.ip_address(inner.hosts[0]).is_loopback
    assert wire.peer == (inner.hosts[0], 9)


def test_backend_refuses_before_connecting(tmp_path: Any) -> None:
    """A refused address never reaches the inner backend (nothing is sent)."""
    inner = _FakeBackend()
    wire = Wire(tmp_path, limit=None)
    try:
        backend = RecordingBackend(url="http://localhost:9/", wire=wire, deadline=Deadline(5),
                                   allow_private_networks=False, inner=inner)
        with pytest.raises(FetchRefused):
            backend.connect_tcp("localhost", 9)
    finally:
        wire.close()
    assert inner.hosts == []


def test_backend_refuses_a_second_connection(tmp_path: Any) -> None:
    """One exchange, one connection: a second connect would mix two exchanges' bytes."""
    inner = _FakeBackend()
    wire = Wire(tmp_path, limit=None)
    try:
        backend = RecordingBackend(url="http://127.0.0.1:9/", wire=wire, deadline=Deadline(5),
                                   allow_private_networks=True, inner=inner)
        backend.connect_tcp("127.0.0.1", 9)
        with pytest.raises(RuntimeError, match="second connection"):
            backend.connect_tcp("127.0.0.1", 9)
    finally:
        wire.close()
