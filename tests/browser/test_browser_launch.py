"""Starting the browser: what happens without one, the options that shape it, and the
dead-end proxy that keeps anything not routed through the recorder off the network."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from browser_site import CHROMIUM, Capture, Site, fast_options
from PIL import Image
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright
from warc_judges import read_records

from archiver.capture.browser import BrowserFetcher
from archiver.capture.browser.chromium import chromium_flags, dead_end, launch
from archiver.capture.browser.router import browser_headers, navigation_key
from archiver.capture.browser.service import browser_pid
from archiver.capture.page import capture_page
from archiver.recorder import OutgoingRequest, RecorderOptions, RecordingSession, open_session


def test_a_missing_browser_is_reported_and_the_capture_goes_on(
    browser_site: Site, capture: Capture, tmp_path: Path
) -> None:
    """No Chromium at browser.executable: outcome skipped (browser-unavailable) naming
    the path, no artifacts, and the page's WARC is published all the same."""
    missing = tmp_path / "no-such-chromium"
    done = capture(browser_site.url("/post.html"), options=fast_options(executable=missing))
    outcome = done.report.outcome
    assert (outcome.status, outcome.reason) == ("skipped", "browser-unavailable")
    assert outcome.message == (f"no browser at {missing} (install Debian's chromium "
                               "package, or set browser.executable)")
    assert done.report.artifacts == ()
    assert [r.header("WARC-Type") for r in read_records(done.warc)] == [
        "warcinfo", "request", "response", "request", "response"]


def test_a_browser_that_will_not_start_is_reported(browser_site: Site, capture: Capture) -> None:
    """An executable that exits at once (/bin/false): skipped, browser-unavailable, with
    Playwright's reason in one line."""
    done = capture(browser_site.url("/post.html"),
                   options=fast_options(executable=Path("/bin/false")))
    outcome = done.report.outcome
    assert (outcome.status, outcome.reason) == ("skipped", "browser-unavailable")
    assert str(outcome.message).startswith("Chromium at /bin/false could not be started: ")
    assert "\n" not in str(outcome.message)
    assert done.report.artifacts == ()


def test_a_disabled_browser_says_so(browser_site: Site, capture: Capture) -> None:
    """browser.enabled = false: skipped (disabled), nothing started, nothing recorded."""
    done = capture(browser_site.url("/post.html"), options=fast_options(enabled=False))
    assert done.report.outcome.as_json() == {
        "status": "skipped", "reason": "disabled",
        "message": "browser.enabled is false: no browser view"}
    assert done.report.provenance["options"]["enabled"] is False
    assert not (done.work / "browser").exists()
    assert done.seconds < 5


def test_no_browser_when_the_capture_has_no_time_left(
    browser_site: Site, capture: Capture
) -> None:
    """When capture.timeout_seconds is nearly spent by the page fetch, the browser is
    not started, and the outcome says why."""
    done = capture(browser_site.url("/post.html"), capture_seconds=1.0)
    assert done.report.outcome.as_json() == {
        "status": "failed", "reason": "timeout",
        "message": "capture.timeout_seconds left no time to start the browser"}


def test_user_agent_viewport_and_pdf_options_are_applied(
    browser_site: Site, capture: Capture
) -> None:
    """A configured user agent is what goes on the wire and what the page sees; the
    viewport sets the screenshot's width; pdf = false makes no PDF."""
    agent = "Mozilla/5.0 (evidence test agent)"
    done = capture(browser_site.url("/post.html"),
                   options=fast_options(user_agent=agent, viewport_width=900,
                                        viewport_height=700, pdf=False))
    requests = [r for r in read_records(done.warc) if r.header("WARC-Type") == "request"
                and r.header("WARC-Target-URI") == browser_site.url("/api/post.json")]
    (request,) = requests
    # The browser's own header, as Chromium named it, and no second User-Agent.
    assert f"\r\nuser-agent: {agent}\r\n".encode() in request.http_head
    assert request.http_head.lower().count(b"user-agent:") == 1
    assert done.report.provenance["context"]["user_agent"] == agent
    assert [a.name for a in done.report.artifacts] == ["screenshot.png", "dom.html",
                                                      "page.json"]
    (shot,) = [a.path for a in done.report.artifacts if a.name == "screenshot.png"]
    with Image.open(shot) as image:
        assert image.size == (900, 700)


async def _goto_without_routes(url: str) -> str:
    with dead_end() as port:
        async with async_playwright() as playwright:
            browser = await launch(playwright, CHROMIUM, chromium_flags(port))
            try:
                page = await browser.new_page()
                with pytest.raises(PlaywrightError) as caught:
                    await page.goto(url, timeout=15_000)
                return caught.value.message
            finally:
                await browser.close()


def test_traffic_the_recorder_does_not_route_reaches_nothing(browser_site: Site) -> None:
    """With our flags and no routes at all, the browser cannot reach even a server on
    127.0.0.1: what is not routed (Chromium's own services, a redirect's next hop that
    Playwright continues by itself) ends at the dead-end proxy, not on the network."""
    browser_site.clear()
    message = asyncio.run(_goto_without_routes(browser_site.url("/post.html")))
    assert "net::ERR_PROXY_CONNECTION_FAILED" in message
    assert browser_site.hits == []


def test_navigation_keys_match_what_chromium_requests() -> None:
    """The address we navigate to and the one Chromium's request names compare equal:
    no fragment, '/' for an empty path, lower-case scheme and host."""
    assert navigation_key("HTTPS://Example.ORG") == "https://example.org/"
    assert navigation_key("https://example.org/p/1?x=2#reply-3") == "https://example.org/p/1?x=2"
    assert navigation_key("https://example.org/Post") != navigation_key("https://example.org/post")


def test_the_browser_gets_decoded_headers_and_every_cookie() -> None:
    """Framing and encoding headers describe the recorded bytes, not the decoded body the
    browser gets: dropped. Repeated headers are joined, Set-Cookie with newlines."""
    headers = httpx.Headers([
        ("Content-Type", "text/html"), ("Content-Encoding", "gzip"),
        ("Content-Length", "120"), ("Transfer-Encoding", "chunked"),
        ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
        ("Vary", "Accept"), ("Vary", "Cookie"), ("Connection", "close"),
    ])
    assert browser_headers(headers) == {
        "content-type": "text/html", "set-cookie": "a=1; Path=/\nb=2; Path=/",
        "vary": "Accept, Cookie"}


class _FaultySession:
    """A recording session whose exchange for one URL fails with a bug (not a capture
    problem); everything else is the real session's."""

    def __init__(self, inner: RecordingSession, url: str) -> None:
        self._inner = inner
        self._url = url

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def follow(self, request: OutgoingRequest, **kwargs: object) -> object:
        if request.url == self._url:
            raise RuntimeError("a bug in the exchange")
        return self._inner.follow(request, **kwargs)  # type: ignore[arg-type]


def test_a_bug_in_a_request_handler_is_raised_not_swallowed(
    browser_site: Site, tmp_path: Path
) -> None:
    """An unexpected error while the browser's request is exchanged is not lost in
    Playwright's event listener: the fetcher raises it in the capture's thread."""
    warc = tmp_path / "capture.warc.gz"
    work = tmp_path / "work"
    work.mkdir()
    options = RecorderOptions(allow_private_networks=True, timeout_seconds=60)
    with open_session(warc, options=options, warcinfo={"software": "test"}) as session:
        page = capture_page(session, browser_site.url("/post.html"))
        faulty = _FaultySession(session, browser_site.url("/api/post.json"))
        fetcher = BrowserFetcher(fast_options())
        with pytest.raises(RuntimeError, match="a bug in the exchange"):
            fetcher.run(faulty, page, work)  # type: ignore[arg-type]
        session.publish()
    # The session is still whole: the browser's other exchanges are in the WARC.
    uris = {r.header("WARC-Target-URI") for r in read_records(warc)}
    assert browser_site.url("/api/post.json") not in uris


async def _browser_command_line() -> list[str]:
    with dead_end() as port:
        async with async_playwright() as playwright:
            browser = await launch(playwright, CHROMIUM, chromium_flags(port))
            try:
                pid = browser_pid(port)
                assert pid is not None
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    return [a.decode() for a in cmdline.read().split(b"\0") if a]
            finally:
                await browser.close()


def test_chromium_keeps_its_shared_memory_out_of_dev_shm() -> None:
    """The browser is started with --disable-dev-shm-usage, so a container's small
    /dev/shm (64 MiB under Docker) cannot crash its renderers: in our own flags (not left
    to Playwright's defaults, which change between versions) and on the running process."""
    assert "--disable-dev-shm-usage" in chromium_flags(9)
    assert "--disable-dev-shm-usage" in asyncio.run(_browser_command_line())
