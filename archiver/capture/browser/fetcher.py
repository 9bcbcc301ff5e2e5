"""The browser fetcher: what a person would have seen, rendered by Chromium, every byte it
fetched recorded in the capture's WARC, the rendered views sealed as artifacts.

It runs after the page fetch (and before media, so the media fetcher gets the media URLs
the browser saw: :meth:`RecordingSession.add_discovered_media`).

Chromium is the process's one browser (:class:`~.service.BrowserService`), started by
the first capture and lent to each in a fresh, isolated context. The view runs on the
service's event loop; the capture's thread waits for it with a deadline:
``browser.timeout_seconds`` (capped by what ``capture.timeout_seconds`` left) plus
:data:`CLOSE_GRACE`. If it overran even that, the view is cancelled, the router is closed
(no further exchange can start) and the capture goes on without the browser view
(outcome ``failed``, ``timeout``). Files become WARC records and artifacts only here, in
the capture's thread, after the view finished, so an overrunning browser never writes
into the capture.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from archiver.capture.browser.chromium import unavailable_reason
from archiver.capture.browser.errors import BrowserError, BrowserUnavailable, NotAPage
from archiver.capture.browser.options import BrowserOptions
from archiver.capture.browser.render import Rendering, render
from archiver.capture.browser.router import Router, notes_json
from archiver.capture.browser.service import BrowserService, Lease
from archiver.capture.fetcher import DerivedArtifact, FetcherReport, Outcome, OutcomeStatus
from archiver.capture.page import PageCapture
from archiver.clock import rfc3339, utc_now
from archiver.recorder import RecordingSession
from archiver.recorder.wire import Deadline

CLOSE_GRACE = 20.0
MIN_BUDGET = 2.0
"""Seconds: with less left of the capture's time, the browser is not started."""
EXCHANGE_THREADS = 4
MAX_LISTED = 200
"""Notes and media URLs listed in provenance (the manifest lists fewer)."""
URN_PREFIX = "urn:evidence-archiver"
# Answers that are files, not pages: rendering them would only pull the whole file
# through the browser (a video up to capture.max_subresource_bytes) for no view.
NOT_PAGE_PREFIXES = ("video/", "audio/", "image/", "font/")
NOT_PAGE_TYPES = frozenset({
    "application/pdf", "application/octet-stream", "application/zip",
    "application/vnd.apple.mpegurl", "application/x-mpegurl", "application/dash+xml",
})


def _playwright_version() -> str:
    try:
        return metadata.version("playwright")
    except metadata.PackageNotFoundError:
        return "absent"


class BrowserFetcher:
    """Renders the captured page in headless Chromium (see the module docstring)."""

    name = "browser"

    def __init__(self, options: BrowserOptions, *, service: BrowserService | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.options = options
        self.clock = clock
        self._service = service
        self._owns_service = service is None

    @property
    def service(self) -> BrowserService:
        """The Chromium this fetcher's captures share (its own, unless one was given)."""
        if self._service is None:
            self._service = BrowserService(self.options)
        return self._service

    def close(self) -> None:
        """Stop the Chromium this fetcher started (one given to it is its owner's)."""
        if self._owns_service and self._service is not None:
            self._service.close()
            self._service = None

    def run(self, session: RecordingSession, page: PageCapture, workdir: Path) -> FetcherReport:
        """Render ``page.requested_url``; never raises for the target's problems (they
        are the outcome). Re-raises a bug or a local failure (disk full) of the phase."""
        options = self.options
        base: dict[str, Any] = {"options": options.as_json(),
                                "playwright": _playwright_version()}
        if not options.enabled:
            return self._report(Outcome("skipped", "disabled",
                                        "browser.enabled is false: no browser view"), base)
        not_a_page = _not_a_page(page)
        if not_a_page is not None:
            return self._report(Outcome("none", NotAPage.reason, not_a_page), base)
        missing = unavailable_reason(options.executable)
        if missing is not None:
            return self._report(Outcome("skipped", BrowserUnavailable.reason, missing), base)
        budget = min(options.timeout_seconds, session.deadline.remaining())
        if budget < MIN_BUDGET:
            return self._report(Outcome(
                "failed", "timeout",
                "capture.timeout_seconds left no time to start the browser"), base)
        out_dir = workdir / "browser"
        out_dir.mkdir(exist_ok=True)
        started = self.clock()
        phase = Deadline(budget)
        leased: list[Lease] = []
        with ThreadPoolExecutor(EXCHANGE_THREADS,
                                thread_name_prefix="browser-exchange") as pool:
            router = Router(session, spool_dir=out_dir, pool=pool, phase=phase,
                            request_timeout=options.request_timeout_seconds,
                            max_requests=options.max_requests,
                            defer_media=options.defer_media)

            async def view(lease: Lease) -> Rendering:
                leased.append(lease)
                return await render(lease=lease, session=session, url=page.requested_url,
                                    options=options, out_dir=out_dir, router=router,
                                    phase=phase, clock=self.clock)

            rendering: Rendering | None = None
            failure: BrowserError | None = None
            try:
                rendering = self.service.run(view, timeout=budget + CLOSE_GRACE)
            except BrowserError as exc:
                failure = exc
            except TimeoutError:
                failure = None
            finally:
                # Exchanges still running end by their deadlines; none starts any more.
                router.close()
        ended = self.clock()
        base["timings"] = {"started": rfc3339(started), "ended": rfc3339(ended)}
        if leased:
            base["browser"] = {"generation": leased[0].generation,
                               "capture_number": leased[0].capture_number,
                               "started_for_this_capture": leased[0].launch_seconds > 0}
        if router.error is not None:
            # A bug or a local failure in a request handler outranks the browser's own
            # failure it may have caused: the capture's thread raises it.
            raise router.error
        if rendering is None and failure is None:
            return self._report(Outcome(
                "failed", "timeout",
                f"the browser did not stop within {budget + CLOSE_GRACE:.0f} s; "
                "abandoned, no browser view"), base)
        if failure is not None:
            status: OutcomeStatus = (
                "skipped" if isinstance(failure, BrowserUnavailable)
                else "none" if isinstance(failure, NotAPage) else "failed")
            base["notes"] = notes_json(router.notes, MAX_LISTED)
            return self._report(Outcome(status, failure.reason, str(failure)), base)
        assert rendering is not None
        return self._rendered(session, rendering, base)

    def _report(self, outcome: Outcome, provenance: dict[str, Any]) -> FetcherReport:
        return FetcherReport(name=self.name, outcome=outcome, provenance=provenance)

    def _rendered(self, session: RecordingSession, view: Rendering,
                  base: dict[str, Any]) -> FetcherReport:
        # Record ids are only known once the browser's own page response is recorded;
        # a revisit record of it is as good a target (it names the exchange).
        page_record = session.response_record_for(view.final_url)
        artifacts = []
        for made in view.files:
            # A URN, not the page's URL: a replay tool must never serve the screenshot
            # (or the DOM snapshot) as if it were the page at that address.
            _, digest = session.write_file(
                "resource", url=f"{URN_PREFIX}:{made.kind}:{view.final_url}", path=made.path,
                content_type=made.media_type, refers_to=page_record,
                refers_to_url=view.final_url,
            )
            artifacts.append(DerivedArtifact(made.name, made.role, made.media_type,
                                             made.path, digest))
        missing = sum(view.not_recorded.values())
        outcome = _outcome(view, self.options)
        summary: dict[str, Any] = {
            "final_url": view.final_url,
            "http_status": view.http_status,
            "title": view.title[:500],
            "load_event": view.load_event,
            "network_idle": view.network_idle,
            "scrolls": view.scrolls,
            "reached_bottom": view.reached_bottom,
            "walls": [name for name, _ in view.walls],
            "requests": view.requests,
            "not_recorded": missing,
            "dialogs": len(view.dialogs),
            "media_urls": view.media[:50],
            "artifacts": [made.name for made in view.files],
        }
        provenance = {
            **base,
            "chromium": view.browser_version,
            "executable": str(self.options.executable),
            "flags": view.flags,
            "headless": True,
            "sandbox": False,
            "context": {
                "viewport": {"width": self.options.viewport_width,
                             "height": self.options.viewport_height},
                "user_agent": view.page_info.get("user_agent"),
                "language": view.page_info.get("language"),
                "timezone": view.page_info.get("timezone"),
                "service_workers": "block",
                "downloads": False,
            },
            "durations_s": {k: round(v, 3) for k, v in view.timings.items()},
            "walls": [{"name": n, "evidence": e} for n, e in view.walls],
            "dialogs": view.dialogs,
            "problems": view.problems,
            "not_recorded": view.not_recorded,
            "notes": notes_json(view.notes, MAX_LISTED),
            "media_urls": view.media[:MAX_LISTED],
        }
        return FetcherReport(
            name=self.name, outcome=outcome, artifacts=tuple(artifacts),
            software={"chromium": view.browser_version, "playwright": base["playwright"]},
            summary=summary, provenance=provenance,
        )


def _not_a_page(page: PageCapture) -> str | None:
    """Why the page fetch's answer is nothing to render (a video, an image, a PDF: the
    page fetch and the media fetcher keep those), or None."""
    media_type = (page.content_type or "").split(";")[0].strip().lower()
    if media_type.startswith(NOT_PAGE_PREFIXES) or media_type in NOT_PAGE_TYPES:
        return (f"{page.final_url} is {media_type}, not a page: nothing to render (the "
                "page and media fetchers keep it)")
    return None


def _outcome(view: Rendering, options: BrowserOptions) -> Outcome:
    """``ok``, or ``partial`` with the first of: artifact-incomplete, network-not-idle,
    wall, not-recorded; the message says everything that applies."""
    said: list[str] = []
    reasons: list[str] = []
    if view.problems:
        reasons.append("artifact-incomplete")
        said += view.problems
    if not view.load_event or not view.network_idle:
        reasons.append("network-not-idle")
        if not view.load_event:
            said.append("the page's load event never fired")
        said.append(f"network idle not reached within {options.network_idle_seconds:g} s "
                    "(browser.network_idle_seconds); the views were taken at the deadline")
    if view.walls:
        reasons.append("wall")
        shown = ", ".join(f"a {name} wall ({why})" for name, why in view.walls)
        said.append(f"the page showed {shown}; recorded as shown, nothing was dismissed")
    if view.not_recorded:
        reasons.append("not-recorded")
        listed = ", ".join(f"{kind} {count}" for kind, count in view.not_recorded.items())
        said.append(f"{sum(view.not_recorded.values())} request(s) of the page not recorded "
                    f"({listed}; see provenance.json)")
    for note in view.notes:
        if note.kind == "navigation-refused":
            said.append(f"the page tried to navigate to {note.url} on its own (meta refresh "
                        "or script): refused, the views show the page as it was")
        elif note.kind == "navigation-not-followed":
            said.append(f"the page tried to navigate to {note.url} on its own (meta refresh "
                        "or script): not followed, the views show the page as it was "
                        "(capture that URL to keep it)")
    if view.dialogs:
        said.append(f"{len(view.dialogs)} JavaScript dialog(s) dismissed (see provenance.json)")
    message = "; ".join(said) or None
    if reasons:
        return Outcome("partial", reasons[0], message)
    return Outcome("ok", None, message)
