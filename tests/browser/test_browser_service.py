"""One Chromium per process: captures share it, each in a fresh context that sees nothing
of the others; it is replaced after a crash, after ``recycle_after`` captures and past
its memory limit."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from browser_site import Capture, Site, capturer, fast_options

from archiver.capture.browser import BrowserFetcher
from archiver.capture.browser.service import browser_memory, browser_pid


@pytest.fixture
def shared() -> Iterator[BrowserFetcher]:
    fetcher = BrowserFetcher(fast_options(recycle_after=50))
    try:
        yield fetcher
    finally:
        fetcher.close()


def _port(flags: list[str]) -> int:
    flag = next(f for f in flags if f.startswith("--proxy-server="))
    return int(flag.rsplit(":", 1)[1])


def _chromium_pid(port: int) -> int:
    """The main Chromium process started with the dead-end proxy ``port``."""
    pid = browser_pid(port)
    assert pid is not None, f"no Chromium with dead-end port {port} runs"
    return pid


def _gone(pid: int, *, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rpartition(")")[2].split()[0] == "Z":
            return True
        time.sleep(0.1)
    return False


def test_captures_share_one_chromium_but_no_cookie_or_storage(
    browser_site: Site, shared: BrowserFetcher, tmp_path: Path
) -> None:
    """Capture A's page sets cookies (by script and by Set-Cookie) and local storage; its
    own later request carries those cookies, but capture B, in the same Chromium, sends
    no cookie at all and sees empty storage."""
    capture: Capture = capturer(tmp_path, shared)
    browser_site.clear()
    first = capture(browser_site.url("/leave-state.html"))
    assert first.report.outcome.status == "ok", first.report.outcome
    probe_a = [h for h in browser_site.hits if h.path == "/cookie-probe-a"]
    assert len(probe_a) == 1
    assert "witness=A" in probe_a[0].headers.get("cookie", "")
    assert "tracker=A1" in probe_a[0].headers.get("cookie", "")

    browser_site.clear()
    second = capture(browser_site.url("/probe.html"))
    assert second.report.outcome.status == "ok", second.report.outcome
    hits = browser_site.hits
    assert {h.path for h in hits} >= {"/probe.html", "/cookie-probe-b"}
    assert [h for h in hits if "cookie" in h.headers] == []
    text = json.loads((second.work / "browser" / "page.json").read_text())["text"]
    assert "storage=null cookie=" in text
    assert "witness" not in text

    used = [c.report.provenance["browser"] for c in (first, second)]
    assert used == [
        {"generation": 1, "capture_number": 1, "started_for_this_capture": True},
        {"generation": 1, "capture_number": 2, "started_for_this_capture": False},
    ]
    assert first.report.provenance["flags"] == second.report.provenance["flags"]


def test_chromium_is_replaced_after_recycle_after_captures(
    browser_site: Site, tmp_path: Path
) -> None:
    """With recycle_after = 2 the third capture starts a new Chromium, and the old one is
    closed once its captures are done."""
    fetcher = BrowserFetcher(fast_options(recycle_after=2))
    try:
        capture = capturer(tmp_path, fetcher)
        done = [capture(browser_site.url("/post.html")) for _ in range(3)]
        assert [d.report.outcome.status for d in done] == ["ok", "ok", "ok"]
        assert [d.report.provenance["browser"]["generation"] for d in done] == [1, 1, 2]
        old, new = _port(done[0].report.provenance["flags"]), _port(
            done[2].report.provenance["flags"])
        assert old != new
        assert browser_memory(old) is None  # the first Chromium is gone
        assert browser_memory(new) is not None
        assert fetcher.service.restarts == {"recycle": 1}
    finally:
        fetcher.close()


def test_a_crashed_chromium_is_replaced_for_the_next_capture(
    browser_site: Site, shared: BrowserFetcher, tmp_path: Path
) -> None:
    """Chromium killed between captures (an OOM kill, a renderer exploit): the next
    capture gets a new one and its browser view all the same."""
    capture = capturer(tmp_path, shared)
    first = capture(browser_site.url("/post.html"))
    pid = _chromium_pid(_port(first.report.provenance["flags"]))
    os.kill(pid, signal.SIGKILL)
    assert _gone(pid)
    second = capture(browser_site.url("/post.html"))
    assert second.report.outcome.status == "ok", second.report.outcome
    assert second.report.provenance["browser"]["generation"] == 2
    assert shared.service.restarts == {"crash": 1}


def test_chromium_past_its_memory_limit_is_replaced_between_captures(
    browser_site: Site, tmp_path: Path
) -> None:
    """A Chromium using more than browser.max_memory_mib is retired when the next capture
    asks for it (never under a running capture), and closed."""
    fetcher = BrowserFetcher(fast_options(max_memory_mib=1))
    try:
        capture = capturer(tmp_path, fetcher)
        first = capture(browser_site.url("/post.html"))
        used = browser_memory(_port(first.report.provenance["flags"]))
        assert used is not None
        assert used > 1024 * 1024
        second = capture(browser_site.url("/post.html"))
        assert [first.report.outcome.status, second.report.outcome.status] == ["ok", "ok"]
        assert second.report.provenance["browser"]["generation"] == 2
        assert fetcher.service.restarts == {"memory": 1}
        assert browser_memory(_port(first.report.provenance["flags"])) is None
    finally:
        fetcher.close()
