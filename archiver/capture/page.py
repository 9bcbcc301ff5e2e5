"""The page fetcher: a URL, its redirects, then its subresources, into a capture's WARC.

Layers, outermost first::

    record_capture / capture_page   the page, its redirects and subresources, the result
      └─ RecordingSession           one capture: WARC, deadline, byte budget, exchanges
           └─ httpx.HTTPTransport → httpcore.ConnectionPool (HTTP/1.1, no keep-alive)
                └─ RecordingBackend / TeeStream   SSRF check at connect, wire bytes, deadline
    WarcFile                        records, atomic publish, file digest while writing

Failures of the main document raise ``archiver.errors``; failures of a subresource
become warnings in the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from archiver.clock import utc_now
from archiver.errors import CaptureError, ResponseTooLarge
from archiver.recorder.addresses import AddressPolicy, non_global_reason
from archiver.recorder.budget import RESOURCES
from archiver.recorder.guard import check_url
from archiver.recorder.links import Link
from archiver.recorder.model import (
    ExchangeSummary,
    RecorderOptions,
    new_record_id,
)
from archiver.recorder.session import (
    Exchange,
    OutgoingRequest,
    RecordingSession,
    open_session,
)
from chain_of_custody.digest import Digest

__all__ = [
    "PageCapture",
    "PageFetcher",
    "RecordingResult",
    "capture_page",
    "record_capture",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PageCapture:
    """What fetching the page (and its subresources) into a session found."""

    requested_url: str
    final_url: str
    status: int
    peer_ip: str | None
    peer_port: int | None
    tls_certificate_sha256: str | None
    tls_chain_pem: str | None
    redirects: tuple[tuple[str, int], ...]
    content_type: str | None
    links: tuple[Link, ...]
    subresources_fetched: int
    response_record_id: str
    body_deferred: bool = False
    """The page is itself a video, audio file or image: its body was not read by the
    page fetcher (the page's response record holds the status line, the headers and
    whatever arrived with them, marked ``WARC-Truncated``); the media fetcher downloads
    it once, as media, into the same WARC."""
    media: tuple[str, ...] = ()
    """The page's <video>/<audio>/<source> URLs. When the media fetcher runs they are
    left to it (fetched once, as media, not also as subresources)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingResult:
    """What a capture recorded; the WARC itself is at the ``warc_path`` given."""

    requested_url: str
    final_url: str
    status: int
    peer_ip: str | None
    peer_port: int | None
    tls_certificate_sha256: str | None
    tls_chain_pem: str | None
    redirects: tuple[tuple[str, int], ...]
    exchanges: tuple[ExchangeSummary, ...]
    subresources_fetched: int
    warnings: tuple[str, ...]
    started: datetime
    ended: datetime
    warc_digest: Digest
    page_content_type: str | None


def record_capture(
    url: str,
    *,
    warc_path: Path,
    options: RecorderOptions,
    warcinfo: Mapping[str, str],
    clock: Callable[[], datetime] = utc_now,
    new_record_id: Callable[[], str] = new_record_id,
    address_policy: AddressPolicy = non_global_reason,
) -> RecordingResult:
    """Fetch ``url`` and record every exchange into one WARC 1.1 file at ``warc_path``.

    The WARC holds a ``warcinfo`` record (``warcinfo`` fields, as given), then for each
    exchange a ``request`` and a ``response`` record with the exact wire bytes, and for
    https a ``metadata`` record with the server's certificate chain (PEM). The file
    appears at ``warc_path`` only when the capture succeeded. A 404 or 410 main document
    is a success: the takedown is the evidence.

    ``clock`` stamps WARC-Date and the result's times; ``new_record_id`` makes every
    WARC-Record-ID (``<urn:uuid:…>``), in write order. ``address_policy`` decides which
    peer addresses the SSRF guard refuses when private networks are not allowed (the
    default refuses everything not globally routable; tests inject a narrower one).

    Raises:
        FetchRefused: the URL's scheme is not http(s), or the SSRF guard refused an
            address of the page or of a redirect hop.
        FetchTimeout: ``options.timeout_seconds`` ran out before the page was complete.
        TooManyRedirects: more than ``options.max_redirects`` redirects.
        ResponseTooLarge: the page exceeded ``max_response_bytes`` (or ``max_total_bytes``).
        TlsError: TLS handshake or certificate verification failed.
        FetchFailed: DNS, connection or HTTP protocol failure.
        ConfigError: ``options.ca_bundle`` cannot be loaded.
        FileExistsError: ``warc_path`` already exists (it is never overwritten).
        ValueError: a warcinfo field would break the record (line break, bad name).
    """
    check_url(url, allow_private_networks=options.allow_private_networks, policy=address_policy)
    with open_session(
        warc_path, options=options, warcinfo=warcinfo, clock=clock,
        new_record_id=new_record_id, address_policy=address_policy,
    ) as session:
        started = session.started
        page = capture_page(session, url)
        ended = clock()
        digest = session.publish()
    return RecordingResult(
        requested_url=url,
        final_url=page.final_url,
        status=page.status,
        peer_ip=page.peer_ip,
        peer_port=page.peer_port,
        tls_certificate_sha256=page.tls_certificate_sha256,
        tls_chain_pem=page.tls_chain_pem,
        redirects=page.redirects,
        exchanges=tuple(session.exchanges),
        subresources_fetched=page.subresources_fetched,
        warnings=session.listed_warnings(),
        started=started,
        ended=ended,
        warc_digest=digest,
        page_content_type=page.content_type,
    )


def capture_page(session: RecordingSession, url: str, *,
                 defer_media: bool = False) -> PageCapture:
    """Fetch the page ``url`` and its redirects into ``session``, then (when enabled) its
    subresources. Raises ``archiver.errors`` for the page; subresource failures become
    session warnings.

    A page that turns out to be a video, an audio file or an image (a direct media URL,
    by its Content-Type) is not downloaded here: reading stops after its headers and
    ``body_deferred`` is set, so the media fetcher downloads it once, with the media
    limits (``capture.max_media_bytes``, its own time budget), instead of twice, and a
    video larger than ``capture.max_response_bytes`` does not fail the capture.

    With ``defer_media`` the page's <video>/<audio> sources are not fetched as
    subresources: the media fetcher downloads them (once, with the media limits)."""
    page, redirects = session.follow(OutgoingRequest(url=url), role="page",
                                     parse_links=session.options.fetch_subresources,
                                     on_headers=_reads_as_page)
    deferred = page.truncated and _is_media_body(page.status, page.headers)
    if page.truncated and not deferred:
        raise ResponseTooLarge(
            f"the response from {page.url} is larger than "
            f"{page.summary.response_bytes} bytes ({_page_limit_name(session)})"
        )
    media = tuple(link.url for link in page.links if link.kind == "media")
    links = [link for link in page.links if not (defer_media and link.kind == "media")]
    fetched = fetch_subresources(session, links) if links else 0
    tls = page.tls
    return PageCapture(
        requested_url=url,
        final_url=page.url,
        status=page.status,
        peer_ip=page.summary.peer_ip,
        peer_port=page.summary.peer_port,
        tls_certificate_sha256=tls.leaf_sha256 if tls else None,
        tls_chain_pem=tls.chain_pem if tls else None,
        redirects=tuple(redirects),
        content_type=page.content_type,
        links=tuple(page.links),
        subresources_fetched=fetched,
        response_record_id=page.summary.response_record_id,
        body_deferred=deferred,
        media=media,
    )


MEDIA_BODY_TYPES = ("video/", "audio/", "image/")


def _is_media_body(status: int, headers: httpx.Headers) -> bool:
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    return 200 <= status < 300 and media_type.startswith(MEDIA_BODY_TYPES)


def _reads_as_page(status: int, headers: httpx.Headers) -> bool:
    """False (stop after the headers) for a 2xx whose body is a video, audio or image."""
    return not _is_media_body(status, headers)


def _page_limit_name(session: RecordingSession) -> str:
    if session.options.max_total_bytes < session.options.max_response_bytes:
        return "capture.max_total_bytes"
    return "capture.max_response_bytes"


def fetch_subresources(session: RecordingSession, links: list[Link]) -> int:
    """Fetch the page's subresources, then url(...)s of its stylesheets (one level).

    Never raises for a subresource: every failure is a warning. Returns how many
    subresources were recorded (truncated ones included). When the capture's budget
    (:mod:`archiver.recorder.budget`) or its time limit stops the work, what is left is
    counted (one warning, and ``skipped`` in the budget), not listed.
    """
    fetched = 0
    queue = [link for link in links if link.url not in session.seen_urls]
    css_links: list[Link] = []
    for level in (1, 2):
        for index, link in enumerate(queue):
            if link.url in session.seen_urls:
                continue
            stop = _budget_exhausted(session, link.url)
            if stop is not None:
                left = sum(1 for later in queue[index:] if later.url not in session.seen_urls)
                session.budget.skip("page", "subresources", stop, left)
                session.warn(f"{left:,} subresource(s) not fetched: "
                             f"{session.budget.describe(stop)}")
                return fetched
            try:
                result: Exchange
                result, _ = session.follow(OutgoingRequest(url=link.url), role="subresource",
                                           parse_links=level == 1)
            except CaptureError as exc:
                session.warn(f"subresource not captured: {exc}")
                continue
            fetched += 1
            if result.truncated:
                session.warn(
                    f"subresource {result.url} truncated at "
                    f"{result.summary.response_bytes} bytes (capture.max_subresource_bytes"
                    " or capture.max_total_bytes); recorded with WARC-Truncated: length"
                )
            if level == 1:
                css_links += result.links
        queue = [link for link in css_links if link.url not in session.seen_urls]
    return fetched


def _budget_exhausted(session: RecordingSession, url: str) -> str | None:
    """The setting whose limit stops fetching ``url``, else None (then ``url`` holds
    one of the capture's ``max_subresources``)."""
    spent = session.budget.exhausted()
    if spent is not None:
        return spent
    if session.deadline.expired:
        return "capture.timeout_seconds"
    if not session.budget.take_resource(url):
        return RESOURCES
    return None


class PageFetcher:
    """The first fetcher of every capture: the page, its redirects and (when
    ``capture.fetch_subresources``) the resources it references, into the session.

    Unlike the fetchers that follow it, it raises: without the page there is no capture.
    Its limits are the session's (``capture.*``). ``defer_media`` (the media fetcher
    runs): the page's videos are left to it."""

    name = "page"

    def __init__(self, *, defer_media: bool = False) -> None:
        self.defer_media = defer_media

    def fetch(self, session: RecordingSession, url: str) -> PageCapture:
        """See :func:`capture_page`; raises ``archiver.errors.CaptureError`` subclasses."""
        return capture_page(session, url, defer_media=self.defer_media)
