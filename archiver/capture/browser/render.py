"""One browser view: in a fresh context of the process's Chromium (lent by
:mod:`.service`), load the page through the recorder, let it settle, scroll, and take
the rendered artifacts.

Time. The phase has one budget (``browser.timeout_seconds``, capped by what is left of
``capture.timeout_seconds``), enforced as a hard ``asyncio.timeout``. Loading, waiting for
network idle and scrolling must end by ``budget - reserve`` (reserve: a third of the
budget, at most :data:`ARTIFACT_RESERVE_MAX` seconds), so a page that never falls quiet
is still photographed, printed and serialised in the reserve, and the report says that
network idle was not reached.

Network idle is measured on our own routes (see :meth:`Router.wait_quiet`): no request in
flight for 500 ms, counted from when we start waiting. Playwright's ``networkidle`` load
state fires once per navigation, so it cannot tell whether scrolling is still loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Dialog, FloatRect, Page
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from archiver.capture.browser import scripts
from archiver.capture.browser.chromium import first_line
from archiver.capture.browser.errors import (
    BrowserError,
    BrowserTimeout,
    NavigationFailed,
    NotAPage,
)
from archiver.capture.browser.options import BrowserOptions
from archiver.capture.browser.router import Note, Router
from archiver.capture.browser.service import Lease
from archiver.clock import rfc3339
from archiver.recorder import RecordingSession
from archiver.recorder.wire import Deadline

ARTIFACT_RESERVE_MAX = 20.0
SCROLL_QUIET = 0.25
"""After each scroll step: how long the network must stay quiet (lazy loads start)."""
SCROLL_SETTLE_MAX = 3.0
"""After each scroll step: the longest we wait for that quiet."""
MAX_SCREENSHOT_HEIGHT = 20_000
"""CSS pixels; a taller page (an endless feed) is photographed down to here, and the
report says so (a full-page PNG of 1280 x 100,000 px would take 500 MB to encode)."""
CLOSE_SECONDS = 10.0
MAX_NAVIGATIONS = 4
MAX_DIALOG_MESSAGE = 1000
NAVIGATION_POLL = 0.1
"""Seconds between looks at a document whose own navigation was aborted (see _goto)."""


@dataclass(frozen=True, slots=True)
class RenderedFile:
    """A file the browser view made; ``kind`` names it in its WARC record's URN."""

    name: str
    role: str
    media_type: str
    path: Path
    kind: str


@dataclass(slots=True)
class Rendering:
    """What one browser view found and made."""

    browser_version: str
    flags: list[str]
    final_url: str
    http_status: int | None
    title: str
    load_event: bool
    network_idle: bool
    scrolls: int
    reached_bottom: bool
    walls: list[tuple[str, str]]
    dialogs: list[dict[str, str]]
    files: list[RenderedFile]
    problems: list[str]
    page_info: dict[str, Any]
    requests: int
    notes: list[Note]
    not_recorded: dict[str, int]
    media: list[str]
    timings: dict[str, float] = field(default_factory=dict)


def _ms(until: float) -> float:
    # Playwright reads timeout=0 as "no timeout": never pass less than 1 ms.
    return max(1.0, (until - time.monotonic()) * 1000)


async def render(
    *,
    lease: Lease,
    session: RecordingSession,
    url: str,
    options: BrowserOptions,
    out_dir: Path,
    router: Router,
    phase: Deadline,
    clock: Callable[[], datetime],
) -> Rendering:
    """Render ``url`` in a fresh, isolated context of the lent browser, every request of
    which goes through ``router`` into ``session``; write the artifacts into ``out_dir``.
    The context is closed before this returns, whatever happens.

    Raises NotAPage, NavigationFailed, BrowserTimeout, BrowserError (the browser crashed
    or Playwright failed), and re-raises what the router caught (a bug or a local failure
    such as a full disk).
    """
    budget = phase.remaining()
    started = time.monotonic()
    reserve = min(ARTIFACT_RESERVE_MAX, budget / 3)
    settle_by = started + budget - reserve
    timings = {"launch": lease.launch_seconds}
    try:
        async with asyncio.timeout(budget):
            rendering = await _view(lease.browser, url, options, out_dir, router,
                                    settle_by, started + budget, clock, timings)
    except TimeoutError as exc:
        raise BrowserTimeout(
            f"the browser phase did not finish within {budget:.0f} s "
            "(browser.timeout_seconds, or what capture.timeout_seconds left)"
        ) from exc
    except PlaywrightError as exc:
        raise BrowserError(f"the browser failed: {first_line(exc.message)}") from exc
    finally:
        router.close()
    if router.error is not None:
        raise router.error
    rendering.flags = lease.flags
    rendering.timings["total"] = time.monotonic() - started + lease.launch_seconds
    return rendering


async def _close_context(context: BrowserContext) -> None:
    # The context's pages, cookies and storage go with it; a browser that hangs is
    # retired by the service.
    with contextlib.suppress(PlaywrightError, TimeoutError):
        await asyncio.wait_for(context.close(), CLOSE_SECONDS)


async def _view(
    browser: Browser,
    url: str,
    options: BrowserOptions,
    out_dir: Path,
    router: Router,
    settle_by: float,
    hard_end: float,
    clock: Callable[[], datetime],
    timings: dict[str, float],
) -> Rendering:
    context = await browser.new_context(
        viewport={"width": options.viewport_width, "height": options.viewport_height},
        user_agent=options.user_agent,
        # A service worker could answer the page from a cache we never recorded.
        service_workers="block",
        accept_downloads=False,
    )
    try:
        return await _in_context(context, url, options, out_dir, router, settle_by,
                                 hard_end, clock, timings, browser.version)
    finally:
        await _close_context(context)


async def _in_context(
    context: BrowserContext,
    url: str,
    options: BrowserOptions,
    out_dir: Path,
    router: Router,
    settle_by: float,
    hard_end: float,
    clock: Callable[[], datetime],
    timings: dict[str, float],
    browser_version: str,
) -> Rendering:
    await context.route("**/*", router.handle)
    await context.route_web_socket("**/*", router.refuse_websocket)
    page = await context.new_page()
    dialogs: list[dict[str, str]] = []

    async def on_dialog(dialog: Dialog) -> None:
        # alert()/confirm() block the page until answered. Dismissed, and reported:
        # the capture says which dialogs the page raised.
        dialogs.append({"type": dialog.type, "message": dialog.message[:MAX_DIALOG_MESSAGE]})
        with contextlib.suppress(PlaywrightError):  # the page went away meanwhile
            await dialog.dismiss()

    page.on("dialog", on_dialog)
    mark = time.monotonic()
    load_event, status = await _navigate(page, router, url, settle_by)
    timings["navigate"] = time.monotonic() - mark
    mark = time.monotonic()
    idle_until = min(settle_by, mark + options.network_idle_seconds)
    network_idle = await router.wait_quiet(idle_until)
    timings["network_idle_wait"] = time.monotonic() - mark
    mark = time.monotonic()
    scrolls, reached_bottom = await _scroll(page, router, options.max_scrolls, settle_by)
    timings["scroll"] = time.monotonic() - mark
    mark = time.monotonic()
    files, problems = await _artifacts(page, out_dir, options, hard_end)
    info: dict[str, Any] = await page.evaluate(scripts.PAGE_INFO)
    walls = [(str(name), str(why)) for name, why in await page.evaluate(scripts.WALLS)]
    for src in await page.evaluate(scripts.DOM_MEDIA):
        router.add_media(str(src))
    final_url = page.url
    page_json = out_dir / "page.json"
    page_json.write_text(json.dumps({
        "type": "evidence-archiver/browser-page/v1",
        "requested_url": url,
        "final_url": final_url,
        "http_status": status,
        "title": info["title"],
        "text": info["text"],
        "rendered_at": rfc3339(clock()),
        "load_event": load_event,
        "network_idle": network_idle,
        "scrolls": scrolls,
        "reached_bottom": reached_bottom,
        "walls": [{"name": n, "evidence": e} for n, e in walls],
        "dialogs": dialogs,
        "viewport": {"width": options.viewport_width, "height": options.viewport_height},
        "user_agent": info["user_agent"],
        "language": info["language"],
        "timezone": info["timezone"],
    }, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    files.append(RenderedFile("page.json", "metadata", "application/json", page_json,
                              "page-info"))
    if options.pdf:
        pdf = out_dir / "page.pdf"
        try:
            await page.pdf(path=pdf, print_background=True, format="A4")
            files.append(RenderedFile("page.pdf", "pdf", "application/pdf", pdf, "pdf"))
        except PlaywrightError as exc:
            problems.append(f"page.pdf not made: {first_line(exc.message)}")
    timings["artifacts"] = time.monotonic() - mark
    return Rendering(
        browser_version=browser_version, flags=[], final_url=final_url, http_status=status,
        title=str(info["title"]), load_event=load_event, network_idle=network_idle,
        scrolls=scrolls, reached_bottom=reached_bottom, walls=walls, dialogs=dialogs,
        files=files, problems=problems, page_info=info, requests=router.requests,
        notes=list(router.notes), not_recorded=router.not_recorded, media=list(router.media),
        timings=timings,
    )


async def _navigate(page: Page, router: Router, url: str, until: float) -> tuple[
        bool, int | None]:
    """Go to ``url``; (load event fired, status). Raises NotAPage, NavigationFailed.

    When ``url`` redirects, the router has the recorder follow the chain and aborts the
    first navigation; we then navigate to where it ended, answered from the recorded
    response (see :mod:`archiver.capture.browser.router`).
    """
    target = url
    # Each round follows a whole redirect chain, so the second round normally ends it;
    # a server that redirects the browser anew each time is cut short.
    for _ in range(MAX_NAVIGATIONS):
        router.expect_navigation(target)
        try:
            await _goto(page, router, target, until)
        except PlaywrightTimeout as exc:
            if page.url in ("", "about:blank"):
                raise NavigationFailed(
                    f"{url} did not start loading in the browser before the deadline"
                ) from exc
            return False, None  # committed, but a resource kept the load event from firing
        except PlaywrightError as exc:
            redirected = router.take_redirect()
            if redirected is not None:
                target = redirected
                continue
            message = first_line(exc.message)
            if "Download is starting" in message:
                raise NotAPage(f"{url} is a download in the browser, not a page: nothing "
                               "to render (the page fetch recorded it)") from exc
            raise NavigationFailed(f"the browser could not load {url}: {message}") from exc
        redirected = router.take_redirect()
        if redirected is None:
            return True, router.navigation_status
        target = redirected
    raise NavigationFailed(f"{url} kept redirecting the browser ({MAX_NAVIGATIONS} chains)")


async def _goto(page: Page, router: Router, target: str, until: float) -> None:
    """``page.goto(target)`` until the document has loaded: the load event, or, once
    the page started a navigation of its own (aborted by the router), its ``readyState``.

    Playwright stops watching for the load event of a document once that document
    starts another navigation, even one that is aborted and leaves it in place (a
    ``location = …`` in an inline script), so ``goto`` would wait out its whole timeout;
    the document's ``readyState`` tells when it has loaded. Raises as ``page.goto``.
    """
    going = asyncio.ensure_future(page.goto(target, wait_until="load", timeout=_ms(until)))
    try:
        while True:
            done, _ = await asyncio.wait({going}, timeout=NAVIGATION_POLL)
            if done:
                going.result()
                return
            if router.page_navigations and page.url not in ("", "about:blank"):
                with contextlib.suppress(PlaywrightError):
                    if await page.evaluate("document.readyState") == "complete":
                        return
    finally:
        if not going.done():
            going.cancel()
            with contextlib.suppress(asyncio.CancelledError, PlaywrightError):
                await going


async def _scroll(page: Page, router: Router, max_scrolls: int, until: float) -> tuple[
        int, bool]:
    """Scroll one viewport at a time until the page stops growing, ``max_scrolls`` steps
    or ``until``; then back to the top. Returns (steps, whether the bottom was reached)."""
    steps = 0
    reached_bottom = False
    while steps < max_scrolls and time.monotonic() < until:
        step = await page.evaluate(scripts.SCROLL_STEP)
        if not step["moved"]:
            reached_bottom = True
            break
        steps += 1
        await router.wait_quiet(min(until, time.monotonic() + SCROLL_SETTLE_MAX),
                                window=SCROLL_QUIET)
    if not reached_bottom:
        reached_bottom = bool(await page.evaluate(scripts.AT_BOTTOM))
    if steps:
        await page.evaluate(scripts.SCROLL_TOP)
        await router.wait_quiet(min(until, time.monotonic() + SCROLL_SETTLE_MAX),
                                window=SCROLL_QUIET)
    return steps, reached_bottom


async def _artifacts(page: Page, out_dir: Path, options: BrowserOptions, until: float
                     ) -> tuple[list[RenderedFile], list[str]]:
    """Full-page screenshot, then the serialised DOM (as close in time as we can)."""
    files: list[RenderedFile] = []
    problems: list[str] = []
    shot = out_dir / "screenshot.png"
    try:
        height = int(await page.evaluate(scripts.PAGE_HEIGHT))
        clip: FloatRect | None = None
        if height > MAX_SCREENSHOT_HEIGHT:
            clip = {"x": 0.0, "y": 0.0, "width": float(options.viewport_width),
                    "height": float(MAX_SCREENSHOT_HEIGHT)}
            problems.append(f"screenshot.png shows the top {MAX_SCREENSHOT_HEIGHT} px of a "
                            f"{height} px page")
        await page.screenshot(path=shot, full_page=True, clip=clip, timeout=_ms(until))
        files.append(RenderedFile("screenshot.png", "screenshot", "image/png", shot,
                                  "screenshot"))
    except PlaywrightError as exc:
        problems.append(f"screenshot.png not made: {first_line(exc.message)}")
    dom = out_dir / "dom.html"
    try:
        dom.write_text(await page.content(), encoding="utf-8")
        files.append(RenderedFile("dom.html", "dom", "text/html; charset=utf-8", dom, "dom"))
    except PlaywrightError as exc:
        problems.append(f"dom.html not made: {first_line(exc.message)}")
    return files, problems


__all__ = ["RenderedFile", "Rendering", "render"]
