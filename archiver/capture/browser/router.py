"""Every request the browser makes, made instead by the recorder.

Playwright hands each request of the capture's browser context to :meth:`Router.handle`
(``context.route("**/*", …)``). The router turns it into an
:class:`~archiver.recorder.OutgoingRequest` (method, the browser's own headers, body),
has the capture's :class:`~archiver.recorder.RecordingSession` make the exchange (fresh
connection, SSRF guard at connect time, exact wire bytes, peer address and TLS chain into
the capture's one WARC) and answers the browser with what came back
(``route.fulfill``), or refuses it (``route.abort``) and notes why. So the browser sees
exactly what was recorded, and nothing it sees was fetched behind the recorder's back.

Redirects. Playwright continues the next hop of a redirect on its own, unrouted (its
Chromium network manager does ``Fetch.continueRequest`` for any request with a
``redirectedFrom``), so answering a 3xx and letting the browser follow would fetch the
next hop unrecorded (the dead-end proxy makes that fail, see
:mod:`archiver.capture.browser.chromium`). So the recorder follows every redirect chain itself
(``session.follow``: each hop recorded and guarded), and then:

* for the top-level navigation the render flow started, the first request is aborted,
  the final response is kept ready, and the render flow navigates to the final address
  (:meth:`Router.take_redirect`), which is answered from what was kept: the browser ends
  on the right address and nothing is fetched twice;
* any other request (subresources, iframes, navigations the page starts itself) is given
  the final response at the address it asked for (so ``response.url`` in the page's
  scripts names the first address), and this is noted.

(Playwright's private ``Route._redirect_navigation_request``, which its HAR replay uses,
would turn each hop into a navigation, but when such a navigation fails or is interrupted
its driver dies of an unhandled promise rejection: a hostile redirect could kill the
browser view.)

Navigations the page starts itself. Once the render flow's own navigation is under way,
a main-frame navigation the page starts (a meta refresh, ``location = …`` in a script) is
never followed: it is aborted with ``aborted`` (Chromium's ``ERR_ABORTED``, which leaves
the current document in place; any other code would commit an error page), and noted:
``navigation-refused`` with the guard's reason when the guard refuses the address, else
``navigation-not-followed`` (nothing is fetched). So a hostile page cannot replace itself
with an error page, or pull the view to an address we refuse, halfway through the views
(Playwright's calls would die with "Execution context was destroyed"), and the views
always show the page that was asked for. Navigations of frames inside the page are
requests like any other.

Not routed, so not recorded: ``data:`` and ``blob:`` URLs (no network); CORS preflight
``OPTIONS`` requests, which Playwright answers itself while routing is on (permissively,
so a cross-origin request the real server would refuse may succeed in the capture);
WebSockets (refused, see :meth:`Router.refuse_websocket`); server-sent event streams
(refused up front: they never end, so recording one would only hold the session for
``request_timeout_seconds`` and keep nothing).

Threads. The exchange blocks, so it runs in a worker thread (``pool``) while
Playwright's event loop stays free; :class:`RecordingSession` serialises exchanges with
its lock. Bodies: the decoded entity goes to a temporary file in the capture's directory;
Playwright carries a fulfilled body to the browser in one message, so each body is in
memory once while it is handed over (bounded by :data:`HANDOVER_LIMIT`).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Route, WebSocketRoute

from archiver.capture.browser.chromium import first_line
from archiver.errors import (
    BudgetExhausted,
    CaptureError,
    FetchFailed,
    FetchRefused,
    FetchTimeout,
    TlsError,
    TooManyRedirects,
)
from archiver.recorder import Exchange, OutgoingRequest, RecordingSession
from archiver.recorder.wire import Deadline
from archiver.urls import BadUrl, check_url, redacted

MiB = 1024 * 1024
HANDOVER_LIMIT = 256 * MiB
"""A decoded body larger than this is recorded but not handed to the browser."""
IDLE_WINDOW = 0.5
"""Network idle: no request in flight for this long (Playwright's own definition)."""
_POLL = 0.05
MEDIA_TYPES = ("application/vnd.apple.mpegurl", "application/x-mpegurl",
               "application/dash+xml")
# Framing and encodings belong to the recorded connection; the browser gets the decoded
# entity, so these would describe bytes it never receives.
_NOT_FOR_BROWSER = frozenset({
    "content-encoding", "content-length", "transfer-encoding", "connection", "keep-alive",
    "trailer", "upgrade", "proxy-connection",
})

MAX_NOTES = 1000
"""Notes kept in full; past this only their counts (a hostile page can make thousands)."""

NoteKind = Literal[
    "refused", "timeout", "failed", "tls", "redirect-limit", "truncated", "too-large",
    "undecodable", "websocket", "event-stream", "request-limit", "redirected",
    "undelivered", "closed", "media-deferred", "budget", "decoded-size-limit",
    "navigation-refused", "navigation-not-followed",
]
NOT_RECORDED: frozenset[str] = frozenset({
    "refused", "timeout", "failed", "tls", "redirect-limit", "truncated", "too-large",
    "undecodable", "websocket", "event-stream", "request-limit", "budget",
    "decoded-size-limit", "navigation-refused",
})
"""Note kinds meaning that something the page asked for is missing from what it was shown."""

AbortCode = Literal["aborted", "blockedbyclient", "connectionfailed", "failed", "timedout"]


@dataclass(frozen=True, slots=True)
class Note:
    """Something about one request that the capture's report must say."""

    url: str
    kind: NoteKind
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"url": self.url, "kind": self.kind, "detail": self.detail}


@dataclass(frozen=True, slots=True)
class _Fetched:
    exchange: Exchange
    redirects: list[tuple[str, int]]
    body: bytes | None  # None: larger than HANDOVER_LIMIT


def navigation_key(url: str) -> str:
    """``url`` as a navigation request names it: no fragment, ``/`` for an empty path,
    scheme and host in lower case (Chromium's form of what we asked it to load)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/",
                       parts.query, ""))


def is_media(exchange: Exchange) -> bool:
    media_type = exchange.media_type
    return media_type.startswith(("video/", "audio/")) or media_type in MEDIA_TYPES


def browser_headers(headers: httpx.Headers) -> dict[str, str]:
    """Response headers as the browser is given them: framing and encoding dropped,
    repeated headers joined (Set-Cookie with newlines, which Playwright splits again)."""
    joined: dict[str, list[str]] = {}
    for name, value in headers.multi_items():
        key = name.lower()
        if key not in _NOT_FOR_BROWSER:
            joined.setdefault(key, []).append(value)
    return {k: ("\n" if k == "set-cookie" else ", ").join(v) for k, v in joined.items()}


class Router:
    """Routes one browser context's requests through ``session``; see the module doc."""

    def __init__(
        self,
        session: RecordingSession,
        *,
        spool_dir: Path,
        pool: ThreadPoolExecutor,
        phase: Deadline,
        request_timeout: float,
        max_requests: int,
        defer_media: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._spool_dir = spool_dir
        self._pool = pool
        self._phase = phase
        self._request_timeout = request_timeout
        self._max_requests = max_requests
        self._defer_media = defer_media
        self._monotonic = monotonic
        self.requests = 0
        self.notes: list[Note] = []
        self.counts: dict[str, int] = {}  # every note's kind, kept or not
        self.media: list[str] = []
        self.error: BaseException | None = None
        self._expected: str | None = None  # the top-level navigation being started
        self.page_navigations = 0  # main-frame navigations the page started, aborted
        self.navigation_status: int | None = None  # the status the main frame was given
        self._pending: str | None = None  # where its redirects ended
        self._ready: dict[str, _Fetched] = {}  # final responses kept for the browser
        self._inflight = 0
        self._last_activity = monotonic()
        self._closed = False

    # -- state seen by the render flow --------------------------------------------------

    def expect_navigation(self, url: str) -> None:
        """The render flow is about to navigate the main frame to ``url``."""
        self._expected = navigation_key(url)

    def take_redirect(self) -> str | None:
        """Where the expected navigation's redirects ended (None: it did not redirect);
        navigating there is answered with the response the recorder already has."""
        pending, self._pending = self._pending, None
        return pending

    def close(self) -> None:
        """From now on every request is aborted unrecorded (the capture is over)."""
        self._closed = True

    @property
    def not_recorded(self) -> dict[str, int]:
        """How many requests of each kind the page made that were not recorded."""
        return {k: n for k, n in sorted(self.counts.items()) if k in NOT_RECORDED}

    async def wait_quiet(self, until: float, *, window: float = IDLE_WINDOW) -> bool:
        """Wait until no request has been in flight for ``window`` seconds, counted from
        the call at the earliest (a request that a scroll or a timer is about to start
        gets that long to show up), or until the monotonic time ``until``. True when the
        network fell quiet."""
        called = self._monotonic()
        while True:
            now = self._monotonic()
            quiet_since = max(self._last_activity, called)
            if self._inflight == 0 and now - quiet_since >= window:
                return True
            if now >= until:
                return False
            await asyncio.sleep(_POLL)  # polling with a deadline (the loop above)

    def add_media(self, url: str) -> None:
        try:  # the media fetcher gets (and the provenance lists) it without a password
            url = check_url(url, userinfo="strip").url
        except BadUrl:
            return
        if url.startswith(("http://", "https://")) and url not in self.media:
            self.media.append(url)
            self._session.add_discovered_media(url)

    # -- Playwright callbacks -------------------------------------------------------------

    async def handle(self, route: Route) -> None:
        self._inflight += 1
        self._last_activity = self._monotonic()
        self.requests += 1
        try:
            await self._handle(route)
        except PlaywrightError as exc:
            # The page or its context went away while we answered (the end of the
            # capture): what was exchanged is recorded, only the answer was lost.
            self._note(route.request.url, "undelivered", first_line(exc.message))
        except Exception as exc:  # noqa: BLE001 - carried to the render flow, re-raised there
            # A bug or a local failure (disk full): Playwright would only log it from
            # its event listener, so keep it for the render flow to raise.
            if self.error is None:
                self.error = exc
            await self._abort(route, "failed")
        finally:
            self._inflight -= 1
            self._last_activity = self._monotonic()

    async def refuse_websocket(self, websocket: WebSocketRoute) -> None:
        """WebSockets are not recorded (the recorder speaks HTTP/1.1 exchanges), so the
        page is refused (close code 1008, policy violation) and the attempt noted."""
        self._note(websocket.url, "websocket",
                   "WebSocket not recorded: refused (closed with code 1008)")
        await websocket.close(code=1008, reason="not recorded by the archiver")

    async def _handle(self, route: Route) -> None:
        request = route.request
        url = request.url
        if self._closed:
            self._note(url, "closed", "requested after the capture ended; not made")
            await self._abort(route, "aborted")
            return
        if self.requests > self._max_requests:
            self._note(url, "request-limit",
                       f"the page made more than {self._max_requests} requests "
                       "(browser.max_requests); not made")
            await self._abort(route, "blockedbyclient")
            return
        if self._defer_media and request.resource_type == "media":
            # A <video>/<audio> the page plays: the media fetcher downloads it once, as
            # media (with its own limits); fetching it here too would record it twice.
            self.add_media(url)
            self._note(url, "media-deferred",
                       "a video or audio the page loads: handed to the media fetcher, "
                       "which records it; not loaded in the browser view")
            await self._abort(route, "aborted")
            return
        if request.resource_type == "eventsource":
            self._note(url, "event-stream",
                       "server-sent event stream not recorded: refused (it never ends)")
            await self._abort(route, "blockedbyclient")
            return
        navigation = request.is_navigation_request()
        main_frame = navigation and request.frame.parent_frame is None
        if main_frame and navigation_key(url) != self._expected:
            await self._page_navigation(route, request)
            return
        if main_frame:
            self._expected = None  # answered once; the page asking for it again is its own
        kept = self._ready.pop(navigation_key(url), None) if navigation else None
        if kept is not None:  # the end of a redirect chain the recorder followed
            await self._deliver(route, url, kept, main_frame=main_frame)
            return
        headers = await request.all_headers()
        outgoing = OutgoingRequest(
            url=url,
            method=request.method,
            # HTTP/2 pseudo-headers never reach an HTTP/1.1 request.
            headers=tuple((k, v) for k, v in headers.items() if not k.startswith(":")),
            content=request.post_data_buffer or b"",
        )
        top_level = main_frame
        loop = asyncio.get_running_loop()
        try:
            fetched = await loop.run_in_executor(self._pool, self._fetch, outgoing)
        except CaptureError as exc:
            await self._refused(route, url, exc)
            return
        if top_level and fetched.redirects and self._undeliverable(fetched) is None:
            final = fetched.exchange.url
            self._ready[navigation_key(final)] = fetched
            self._pending = final
            self._expected = None
            await self._abort(route, "aborted")
            return
        if fetched.redirects:
            self._note(url, "redirected", (
                f"followed {len(fetched.redirects)} redirect(s) to {fetched.exchange.url}; "
                "the browser was given that response at the first address"))
        await self._deliver(route, url, fetched, main_frame=main_frame)

    async def _page_navigation(self, route: Route, request: Any) -> None:
        """A main-frame navigation the page started itself: never followed (see the
        module docstring); refused (with the guard's reason) or noted as not followed."""
        url = request.url
        self.page_navigations += 1
        try:  # the guard's own check: nothing is resolved, fetched or counted
            self._session.check_target(url)
        except FetchRefused as exc:
            self._note(url, "navigation-refused", str(exc))
        else:
            self._note(url, "navigation-not-followed",
                       "the page navigated itself here (meta refresh or script): not "
                       "followed, not fetched")
        await self._abort(route, "aborted")

    async def _deliver(self, route: Route, url: str, fetched: _Fetched, *,
                       main_frame: bool = False) -> None:
        problem = self._undeliverable(fetched)
        if problem is not None:
            kind, detail = problem
            self._note(url, kind, detail)
            await self._abort(route, "failed")
            return
        done = fetched.exchange
        if main_frame:
            self.navigation_status = done.status
        if is_media(done):
            self.add_media(done.url)
        await route.fulfill(status=done.status, headers=browser_headers(done.headers),
                            body=fetched.body or b"")

    def _fetch(self, outgoing: OutgoingRequest) -> _Fetched:
        """Runs in a worker thread: the recorded exchange(s), and the decoded body."""
        if self._closed:  # the capture moved on while this waited for a thread
            raise FetchTimeout("the browser phase ended before this request was made")
        left = min(self._request_timeout, self._phase.remaining(),
                   self._session.deadline.remaining())
        deadline = Deadline(max(left, 0.0))
        with tempfile.TemporaryFile(dir=self._spool_dir, prefix="browser-body-") as spool:
            done, redirects = self._session.follow(outgoing, role="browser", body=spool,
                                                   deadline=deadline)
            body = None
            if done.body_size <= HANDOVER_LIMIT:
                spool.seek(0)
                body = spool.read()
        return _Fetched(done, redirects, body)

    def _undeliverable(self, fetched: _Fetched) -> tuple[NoteKind, str] | None:
        done = fetched.exchange
        if done.status == 0:
            return "failed", "the response ended inside its header block"
        if done.truncated:
            return "truncated", (
                f"response cut at {done.summary.response_bytes} bytes "
                "(capture.max_subresource_bytes or capture.max_total_bytes); recorded "
                "truncated, not given to the browser")
        if done.body_limit is not None:  # a decompression bomb: Chromium never sees it
            return "decoded-size-limit", (f"{done.body_problem}; recorded as received, "
                                          "not given to the browser")
        if done.body_problem is not None:
            return "undecodable", f"{done.body_problem}; recorded, not given to the browser"
        if fetched.body is None:
            return "too-large", (f"decoded body over {HANDOVER_LIMIT} bytes; recorded, not "
                                 "given to the browser")
        return None

    async def _refused(self, route: Route, url: str, exc: CaptureError) -> None:
        kind: NoteKind
        code: AbortCode
        if isinstance(exc, FetchRefused):
            kind, code, detail = "refused", "blockedbyclient", str(exc)
        elif isinstance(exc, BudgetExhausted):  # the capture's, shared with every fetcher
            kind, code, detail = "budget", "blockedbyclient", str(exc)
        elif isinstance(exc, FetchTimeout):
            kind, code = "timeout", "timedout"
            detail = (f"no complete answer within {self._request_timeout:g} s "
                      "(browser.request_timeout_seconds) or before the browser phase ended; "
                      "not recorded")
        elif isinstance(exc, TooManyRedirects):
            kind, code, detail = "redirect-limit", "failed", str(exc)
        elif isinstance(exc, TlsError):
            kind, code, detail = "tls", "failed", str(exc)
        elif isinstance(exc, FetchFailed):
            kind, code, detail = "failed", "connectionfailed", str(exc)
        else:
            kind, code, detail = "failed", "failed", str(exc)
        self._note(url, kind, detail)
        await self._abort(route, code)

    async def _abort(self, route: Route, code: AbortCode) -> None:
        # Already answered, or the page is gone: nothing left to refuse.
        with contextlib.suppress(PlaywrightError):
            await route.abort(code)

    def _note(self, url: str, kind: NoteKind, detail: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if len(self.notes) < MAX_NOTES:  # kept in the provenance: never with a password
            self.notes.append(Note(redacted(url), kind, redacted(detail)))


def notes_json(notes: list[Note], limit: int) -> list[dict[str, Any]]:
    return [note.as_json() for note in notes[:limit]]
