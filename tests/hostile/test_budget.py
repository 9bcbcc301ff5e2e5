"""Hostile family "budget": one budget per capture (requests, bytes, time), shared by every
fetcher, whatever the page names.

A local server makes its pages on the fly (nothing large is committed) and counts every
request it receives:

    /imgs/<n>     n <img> tags, each naming its own 1x1 PNG (too small to be kept as
                  media, so no item limit ends the work early)
    /links/<n>    n <script src> tags, each its own small script
    /videos/<n>   n <video src> tags, each answering 404
    /drip/<n>     n <img> tags, each image sent one byte every 50 ms, never ending

Each case runs ``archiver capture`` (the whole pipeline, browser off) with the limits in
the table and checks: the requests the server saw equal the requests the capture says it
made, and stay within the budget; what was left out is counted, exactly, in the outcome
and in ``provenance.json`` (never listed one by one); ``provenance.json`` stays within
:data:`PROVENANCE_BOUND` and the manifest within :data:`MANIFEST_BOUND`.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from archive_cli import Cli, archive_environment

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
MAX_LINKS = 10_000  # links the page fetcher reads from one page (recorder.session)
PROVENANCE_FIXED = 64 * 1024
PROVENANCE_PER_REQUEST = 1024
"""``provenance.json`` holds at most PROVENANCE_FIXED bytes plus PROVENANCE_PER_REQUEST
per request the capture made (one line per exchange; warnings kept to 200; everything a
page names beyond that is counted): with the default ``capture.max_requests`` of 5,000,
about 5 MiB at most, whatever the page holds."""
MANIFEST_BOUND = 64 * 1024


class _Site(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()  # path -> requests
        self.stopping = threading.Event()

    def total(self) -> int:
        with self.lock:
            return sum(self.seen.values())

    def paths(self, prefix: str) -> set[str]:
        with self.lock:
            return {p for p in self.seen if p.startswith(prefix)}

    def reset(self) -> None:
        with self.lock:
            self.seen.clear()


class _Handler(BaseHTTPRequestHandler):
    server: _Site

    def do_GET(self) -> None:
        self.close_connection = True
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.seen[path] += 1
        kind, _, rest = path.strip("/").partition("/")
        try:
            if kind == "drip" and rest.startswith("d"):
                self._drip()
                return
            if kind in ("imgs", "links", "videos", "drip") and rest.isdigit():
                self._send("200 OK", "text/html; charset=utf-8", _page(kind, int(rest)))
            elif kind == "i" or (kind == "drip" and not rest.isdigit()):
                self._send("200 OK", "image/png", PNG)
            elif kind == "js":
                self._send("200 OK", "application/javascript", b"var x = 1;\n")
            else:
                self._send("404 Not Found", "text/plain", b"no such thing\n")
        except (ConnectionError, TimeoutError):
            return  # the archiver stopped reading: a limit

    def _send(self, status: str, kind: str, body: bytes) -> None:
        head = (f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}"
                "\r\nConnection: close\r\n\r\n")
        self.wfile.write(head.encode("latin-1") + body)

    def _drip(self) -> None:
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                         b"Content-Length: 1000000\r\nConnection: close\r\n\r\n")
        while not self.server.stopping.wait(0.05):
            self.wfile.write(b"\x00")
            self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        return


def _page(kind: str, n: int) -> bytes:
    tag = {"imgs": '<img src="/i/{}.png">', "links": '<script src="/js/{}.js"></script>',
           "videos": '<video src="/v/{}.mp4"></video>',
           "drip": '<img src="/drip/d{}.png">'}[kind]
    tags = "".join(tag.format(i) for i in range(n))
    return f"<!doctype html><title>{n} {kind}</title><body>{tags}</body>".encode()


@pytest.fixture(scope="module")
def hostile() -> Iterator[_Site]:
    site = _Site()
    thread = threading.Thread(target=site.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.stopping.set()
        site.shutdown()
        site.server_close()
        thread.join(timeout=10)


@dataclass(frozen=True)
class Case:
    """One hostile page, the limits it is captured with, and what must come of it."""

    name: str
    path: str
    settings: dict[str, str]
    max_requests: int
    """Requests the server may see at most (the budget, as configured)."""
    page_skipped: tuple[str, int] | None = None
    """The limit that stopped the page fetcher, and the links it read: every one of
    them not fetched as a subresource must be counted under that limit."""
    media_status: tuple[str, str | None] = ("partial", "budget")
    media_skipped: dict[tuple[str, str], int] = field(default_factory=dict)
    """What the media fetcher must say it left out: {(what, limit): count}."""
    refused: dict[str, int] = field(default_factory=dict)
    """Requests the budget refused, by limit (an exact count where given)."""


CASES = [
    Case("100,000 images: the subresource allowance is shared by page and media",
         "/imgs/100000", {"ARCHIVER_CAPTURE__MAX_SUBRESOURCES": "20"}, max_requests=45,
         # the page fetcher reads the first 10,000 links of a page
         page_skipped=("capture.max_subresources", MAX_LINKS),
         media_skipped={("page images", "capture.max_subresources"): 100_000 - 20}),
    Case("100,000 images: the request cap stops every fetcher",
         "/imgs/100000", {"ARCHIVER_CAPTURE__MAX_REQUESTS": "30"}, max_requests=30,
         page_skipped=("capture.max_requests", MAX_LINKS),
         media_skipped={("media URLs", "capture.max_requests"): 1,
                        ("page scans for images", "capture.max_requests"): 1}),
    Case("100,000 images: the byte budget", "/imgs/100000",
         # the page, then some 60 of its images (each about 165 bytes on the wire)
         {"ARCHIVER_CAPTURE__MAX_TOTAL_BYTES": str(len(_page("imgs", 100_000)) + 10_000)},
         max_requests=80, page_skipped=("capture.max_total_bytes", MAX_LINKS),
         media_skipped={("media URLs", "capture.max_total_bytes"): 1,
                        ("page scans for images", "capture.max_total_bytes"): 1}),
    Case("5,000 links", "/links/5000", {"ARCHIVER_CAPTURE__MAX_SUBRESOURCES": "25"},
         max_requests=30, page_skipped=("capture.max_subresources", 5000),
         media_status=("none", None)),
    Case("3,000 videos", "/videos/3000",
         {"ARCHIVER_CAPTURE__MAX_SUBRESOURCES": "10", "ARCHIVER_MEDIA__MAX_ITEMS": "5"},
         max_requests=80, media_status=("failed", "not-found")),
    Case("1,000 slow-drip images: the capture's deadline", "/drip/1000",
         {"ARCHIVER_CAPTURE__FETCH_SUBRESOURCES": "false",
          "ARCHIVER_CAPTURE__DEADLINE_SECONDS": "6"}, max_requests=4,
         media_skipped={("page images", "capture.deadline_seconds"): 999}),
]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path / "archive", capsys)


def _artifact(cli: Cli, capture: dict[str, Any], name: str, tmp_path: Path) -> bytes:
    out = tmp_path / name
    cli.ok("get", capture["id"], name, "-o", str(out))
    return out.read_bytes()


@pytest.mark.hostile("budget")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_capture_stays_within_its_budget(case: Case, hostile: _Site, cli: Cli,
                                          tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The server sees no more requests than the budget allows, exactly the requests the
    capture says it made; what was left out is counted exactly; provenance.json and the
    manifest stay bounded."""
    archive_environment(monkeypatch, cli.home, f"sqlite:///{tmp_path / 'archive.db'}", {
        "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "60",
        "ARCHIVER_BROWSER__ENABLED": "false",
        **case.settings,
    })
    cli.ok("init")
    hostile.reset()
    capture = cli.capture(f"http://127.0.0.1:{hostile.server_address[1]}{case.path}")
    assert capture["status"] == "completed", capture
    seen = hostile.total()
    provenance = _artifact(cli, capture, "provenance.json", tmp_path)
    manifest = _artifact(cli, capture, "manifest.json", tmp_path)
    budget = json.loads(provenance)["budget"]

    # the server saw exactly what the capture made, and no more than the budget
    assert seen == budget["spent"]["requests"] == len(json.loads(provenance)["network"]
                                                         ["exchanges"])
    assert seen <= case.max_requests
    assert budget["spent"]["requests"] <= budget["limits"]["max_requests"]
    assert budget["spent"]["bytes"] <= budget["limits"]["max_total_bytes"]
    assert budget["spent"]["subresources"] <= budget["limits"]["max_subresources"]

    # what was left out is counted, exactly
    skipped = {(s["fetcher"], s["what"], s["limit"]): s["count"] for s in budget["skipped"]}
    if case.page_skipped is not None:
        limit, links = case.page_skipped
        count = links - budget["spent"]["requests_by_role"].get("subresource", 0)
        assert skipped[("page", "subresources", limit)] == count
        warnings = json.loads(provenance)["warnings"]
        assert f"{count:,} subresource(s) not fetched: {limit} (" in "\n".join(warnings)
    for (what, limit), count in case.media_skipped.items():
        assert skipped[("media", what, limit)] == count
        assert re.search(f"skipped {count:,} {what}: {re.escape(limit)} ",
                         capture["outcomes"]["media"]["message"])
    media = capture["outcomes"]["media"]
    assert (media["status"], media["reason"]) == case.media_status, media
    if case.path.startswith("/videos/"):
        # every <video> of the page was either tried or counted as skipped
        tried = len(hostile.paths("/v/"))
        (count,) = [n for (f, what, _), n in skipped.items() if what == "page videos"]
        assert tried + count == 3000
    for limit, count in case.refused.items():
        assert budget["refused"][limit] == count

    # bounded whatever the page holds
    assert len(provenance) <= PROVENANCE_FIXED + PROVENANCE_PER_REQUEST * seen
    assert len(manifest) <= MANIFEST_BOUND
    assert json.loads(manifest)["happened"]["fetchers"]["media"]["budget"] == {
        "requests": budget["spent"]["requests_by_role"].get("media", 0),
        "skipped": [{"what": what, "limit": limit, "count": n}
                    for (f, what, limit), n in skipped.items() if f == "media"],
    }


@pytest.mark.hostile("budget")
def test_the_browser_draws_on_the_same_budget(hostile: _Site, cli: Cli, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A page of 1,000 images rendered by Chromium within a cap of 40 requests: the server
    sees at most 40, every request the browser was refused is counted (kind ``budget``,
    the same number the budget says it refused), and the view is still sealed."""
    archive_environment(monkeypatch, cli.home, f"sqlite:///{tmp_path / 'archive.db'}", {
        "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "60",
        "ARCHIVER_CAPTURE__MAX_REQUESTS": "40",
        "ARCHIVER_CAPTURE__FETCH_SUBRESOURCES": "false",
        "ARCHIVER_MEDIA__ENABLED": "false",
        "ARCHIVER_BROWSER__NETWORK_IDLE_SECONDS": "3",
    })
    cli.ok("init")
    hostile.reset()
    capture = cli.capture(f"http://127.0.0.1:{hostile.server_address[1]}/imgs/1000")
    assert capture["status"] == "completed", capture
    seen = hostile.total()
    provenance = json.loads(_artifact(cli, capture, "provenance.json", tmp_path))
    budget = provenance["budget"]
    assert seen == budget["spent"]["requests"] == 40
    browser = capture["outcomes"]["browser"]
    # (on a busy machine the load event may also wait past network_idle_seconds)
    assert browser["status"] == "partial", browser
    assert browser["reason"] in ("not-recorded", "network-not-idle"), browser
    refused = provenance["fetchers"]["browser"]["not_recorded"]["budget"]
    assert refused == budget["refused"]["capture.max_requests"] >= 1
    assert f"budget {refused}" in browser["message"]
    assert {a["role"] for a in capture["artifacts"]} >= {"screenshot", "dom"}
    assert len(json.dumps(provenance)) <= PROVENANCE_FIXED + PROVENANCE_PER_REQUEST * seen
