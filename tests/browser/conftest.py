"""Fixtures for the browser view: the local site (``browser_site.py``, loaded by path and
registered as ``browser_site``), a server on 127.0.0.2 that must never be reached, a UDP
socket that must never hear WebRTC, and ``capture``: the page fetch and the browser
fetcher into one WARC."""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def _load(name: str, path: Path) -> object:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_load("browser_site", Path(__file__).resolve().parent / "browser_site.py")

from browser_site import (  # noqa: E402  (registered just above)
    PAGES,
    TEMPLATES,
    Capture,
    Site,
    capturer,
    serve,
)


@pytest.fixture(scope="session")
def stun_socket() -> Iterator[socket.socket]:
    """A UDP socket on 127.0.0.1 standing in for a STUN server (must hear nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.2)
        yield sock


@pytest.fixture(scope="session")
def private_site() -> Iterator[Site]:
    """A server on 127.0.0.2: a private address the browser must never reach."""
    server, thread = serve("127.0.0.2", {})
    try:
        yield Site(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser_site(private_site: Site, stun_socket: socket.socket) -> Iterator[Site]:
    """The pages above, on 127.0.0.1."""
    pages = {path: html.encode() for path, html in PAGES.items()}
    server, thread = serve("127.0.0.1", pages)
    values = {"private": private_site.base, "port": server.server_address[1],
              "stun": stun_socket.getsockname()[1]}
    for path, template in TEMPLATES.items():
        pages[path] = template.format(**values).encode()
    try:
        yield Site(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def capture(tmp_path: Path) -> Capture:
    """Runs the page fetch and the browser into ``tmp_path/capture.warc.gz``."""
    return capturer(tmp_path)
