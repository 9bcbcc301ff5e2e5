"""A recording session: one capture's WARC, time limit and byte budget, shared by every
fetcher of that capture (the page fetcher, yt-dlp, the browser).

Every fetcher asks the session for exchanges instead of opening connections itself::

    with open_session(path, options=…, warcinfo=…) as session:
        page = session.follow(OutgoingRequest(url=…), role="page")
        media = session.exchange(OutgoingRequest(url=…, headers=…), role="media",
                                 body=open(…, "wb"))
        digest = session.publish()

so every byte any of them exchanged with a server is in the one WARC, with the same
fidelity (exact wire bytes, peer address, TLS chain) and behind the same SSRF guard,
which runs at connect time for every connection (see :mod:`archiver.recorder.wire`).

What a caller gets back is an :class:`Exchange`: status, parsed headers, and, when it
passed a ``body`` file, the entity body written there with transfer framing and
Content-Encoding undone (the WARC keeps both, as received). Bodies never sit in memory.

The same payload received twice (the page fetcher and the browser loading one image) is
stored once: the second response becomes a ``revisit`` record (identical-payload-digest
profile) pointing at the first response record of this same WARC.

Exchanges are serialised by a lock: the WARC is one sequential file, and the fetchers
that share a session call it from their own threads.

Failures of one exchange raise ``archiver.errors`` (httpcore, ssl and socket errors are
translated by :class:`~archiver.recorder.transport.GuardedTransport`, and only there).
"""

from __future__ import annotations

import functools
import ssl
import threading
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import IO, Literal, Protocol, runtime_checkable
from urllib.parse import urljoin, urlsplit

import certifi
import httpx

from archiver.clock import utc_now
from archiver.errors import (
    ConfigError,
    FetchFailed,
    FetchRefused,
    FetchTimeout,
    TooManyRedirects,
)
from archiver.recorder.addresses import AddressPolicy, non_global_reason
from archiver.recorder.budget import CaptureBudget
from archiver.recorder.guard import check_url
from archiver.recorder.links import (
    BodyDecoder,
    CssUrlScanner,
    Link,
    PageLinkParser,
    resolve_links,
    text_decoder,
)
from archiver.recorder.model import (
    DECODE_RATIO_FLOOR,
    ExchangeSummary,
    RecorderOptions,
    Role,
    new_record_id,
)
from archiver.recorder.transport import GuardedTransport
from archiver.recorder.warcfile import WarcFile, warc_digest_hex
from archiver.recorder.wire import (
    ByteLimitReached,
    Deadline,
    MessageSpool,
    RecordingBackend,
    TlsPeer,
    Wire,
)
from archiver.urls import BadUrl, RefusedUrl, redacted
from archiver.urls import check_url as checked_url
from chain_of_custody.digest import Digest

MiB = 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = ("text/html", "application/xhtml+xml")
# Decoded text fed to the link extractors per document. Bounds parser memory (an
# unterminated comment is buffered by html.parser) and CPU against decompression bombs.
PARSE_LIMIT = 32 * MiB
MAX_LINKS = 10_000
MAX_WARNINGS = 200
"""Warnings of a capture kept word for word; past them only counted (a hostile page can
make any number: one per broken subresource)."""
# Only what we can undo for the caller and the link extractors; the WARC keeps it encoded.
ACCEPT_ENCODING = "gzip, deflate"
# Headers a fetcher may not set: they describe one connection (ours: one exchange each,
# then closed), or the framing httpx computes, or the encodings we can decode.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding",
})
# Credentials a fetcher attached for one site are not sent to the next on a redirect.
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})


class StopReading(Exception):
    """Raised by a caller's ``body`` file (or returned as False from ``on_headers``) to
    stop reading a response: the record keeps what arrived, marked ``WARC-Truncated``.

    The media fetcher uses it when yt-dlp stops reading a response it only probed; the
    page fetcher when the page turns out to be a video it leaves to the media fetcher.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class OutgoingRequest:
    """What a fetcher wants sent. Hop-by-hop headers are replaced by the session's."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    content: bytes = b""


@dataclass(slots=True, kw_only=True)
class Exchange:
    """One recorded request/response, as the fetcher that asked for it sees it."""

    url: str
    method: str
    status: int  # 0 when the response ended inside its header block
    reason: str
    headers: httpx.Headers
    summary: ExchangeSummary
    truncated: bool
    tls: TlsPeer | None
    body_size: int = 0  # decoded bytes written to the caller's body file
    body_problem: str | None = None
    body_limit: str | None = None
    """The setting that stopped decoding the body for the caller (``capture.max_decoded_bytes``
    or ``capture.max_decode_ratio``); ``body_problem`` then says so too."""
    body_encoding: str | None = None
    """The response's Content-Encoding when the archive does not decode it (``br``, a
    chain such as ``gzip, gzip``): the body was recorded, never decoded for the caller;
    ``body_problem`` then says so too."""
    links: list[Link] = field(default_factory=list)
    revisit_of: str | None = None  # the response record this one revisits

    @property
    def location(self) -> str | None:
        if self.status not in REDIRECT_STATUSES:
            return None
        value: str | None = self.headers.get("location")
        return value

    @property
    def content_type(self) -> str | None:
        value: str | None = self.headers.get("content-type")
        return value

    @property
    def media_type(self) -> str:
        return (self.content_type or "").split(";")[0].strip().lower()


class _DecodingSink:
    """Undoes Content-Encoding on the way to :meth:`_consume`, bounded in output; once
    something goes wrong, ``problem`` says what (in the words of ``_WHAT``) and the rest
    of the body is ignored."""

    _WHAT = "the body"

    def __init__(self, content_encoding: str | None, *, limit: int, ratio: float | None,
                 limit_name: str = "capture.max_decoded_bytes") -> None:
        self._decoder = BodyDecoder(content_encoding, max_output=limit, max_ratio=ratio,
                                    ratio_floor=DECODE_RATIO_FLOOR)
        self._limit = limit
        self._limit_name = limit_name
        self.problem: str | None = None
        self.limit: str | None = None
        """The setting whose bound stopped the decoding (a decompression bomb)."""
        self.unsupported: str | None = None
        """The Content-Encoding that is not decoded at all (``br``, a chain of codings)."""
        if not self._decoder.supported:
            self.unsupported = (content_encoding or "")[:100]
            self.problem = (
                f"Content-Encoding {self.unsupported!r} is not one the archive decodes "
                f"(gzip, x-gzip or deflate, one coding): {self._WHAT} was not made "
                "(unsupported-encoding)")

    def feed(self, raw: bytes) -> None:
        if self.problem is not None:
            return
        try:
            data = self._decoder.feed(raw)
        except zlib.error as exc:
            self.problem = f"{self._WHAT}: the body could not be decoded ({exc})"
            return
        self._consume(data)
        if self._decoder.limit == "ratio":
            self.limit = "capture.max_decode_ratio"
            self.problem = (
                f"{self._WHAT}: decoding stopped after {self._decoder.produced:,} bytes, "
                f"more than {self._decoder.max_ratio:g} per byte received "
                "(capture.max_decode_ratio: a decompression bomb)")
        elif self._decoder.limit == "bytes":
            self.limit = self._limit_name
            self.problem = (f"{self._WHAT}: only the first {self._limit:,} decoded bytes "
                            f"taken ({self._limit_name})")

    def _consume(self, data: bytes) -> None:
        raise NotImplementedError


class _BodyWriter(_DecodingSink):
    """Writes the entity body (Content-Encoding undone) to the caller's file, bounded."""

    _WHAT = "the decoded body"

    def __init__(self, target: IO[bytes], content_encoding: str | None, *, limit: int,
                 ratio: float | None) -> None:
        super().__init__(content_encoding, limit=limit, ratio=ratio)
        self._target = target
        self.size = 0

    def _consume(self, data: bytes) -> None:
        self._target.write(data)
        self.size += len(data)


@runtime_checkable
class SpoolReader(Protocol):
    """A caller's ``body`` file that can take the body from the response spool instead
    of being given a copy of it.

    When a response's payload *is* its entity body (no content coding, no chunked
    framing, as with most videos), copying it into the caller's file would write it to
    disk a second time for nothing: the session calls :meth:`from_spool` with the spool
    file and where the body starts in it, then :meth:`grew` as bytes arrive (each time
    with the body's size so far, already handed to the operating system). The caller
    must take its own descriptor (``os.dup``): the session closes the spool after the
    exchange."""

    def from_spool(self, fileno: int, offset: int) -> None: ...

    def grew(self, size: int) -> None: ...


class _SpoolView:
    """In place of a :class:`_BodyWriter` when the body is the payload as received:
    nothing is copied, the caller reads the spool (see :class:`SpoolReader`)."""

    problem: str | None = None

    def __init__(self, target: SpoolReader, spool: MessageSpool, fileno: int) -> None:
        self._target = target
        self._spool = spool
        self.size = 0
        target.from_spool(fileno, spool.header_size)

    def feed(self, raw: bytes) -> None:
        # The wire stream spooled these bytes before httpcore parsed them.
        self.size += len(raw)
        self._spool.flush()
        self._target.grew(self.size)


class _LinkSink(_DecodingSink):
    """Feeds a response body (as received) to a link extractor, decoding on the way."""

    _WHAT = "link extraction (links not followed)"

    def __init__(self, kind: Literal["html", "css"], response: httpx.Response, *,
                 options: RecorderOptions) -> None:
        parse = min(PARSE_LIMIT, options.max_decoded_bytes)
        super().__init__(response.headers.get("content-encoding"), limit=parse,
                         ratio=options.max_decode_ratio,
                         limit_name=("the link extractors' limit" if parse == PARSE_LIMIT
                                     else "capture.max_decoded_bytes"))
        self.kind = kind
        self._text = text_decoder(response.charset_encoding)
        self._html = PageLinkParser(max_links=MAX_LINKS) if kind == "html" else None
        self._css = CssUrlScanner() if kind == "css" else None
        self.url_counts: Counter[str] = Counter()

    def _consume(self, data: bytes) -> None:
        self._parse(self._text.decode(data))

    def _parse(self, text: str) -> None:
        if self._html is not None:
            self._html.feed(text)
        elif self._css is not None:
            self._css.feed(text)

    def links(self, document_url: str) -> list[Link]:
        if self.problem is None:
            self._parse(self._text.decode(b"", final=True))
        if self._html is not None:
            links = self._html.finish(document_url)
            self.url_counts = self._html.url_counts
            return links
        assert self._css is not None
        self._css.close()
        return resolve_links(document_url, [(u, "other") for u in self._css.found[:MAX_LINKS]],
                             self.url_counts)


class RecordingSession:
    """The state of one capture while it runs: WARC, deadline, byte budget, exchanges."""

    def __init__(
        self,
        *,
        warc: WarcFile,
        options: RecorderOptions,
        deadline: Deadline,
        clock: Callable[[], datetime],
        ssl_context: ssl.SSLContext,
        spool_dir: Path,
        policy: AddressPolicy,
        started: datetime | None = None,
        budget: CaptureBudget | None = None,
    ) -> None:
        self.started = started if started is not None else clock()
        self.budget = budget if budget is not None else budget_for(options)
        """Requests, bytes and time of the whole capture, whichever fetcher spends them."""
        self.warc = warc
        self.options = options
        self.deadline = deadline
        self.clock = clock
        self.ssl_context = ssl_context
        self.spool_dir = spool_dir
        self.policy = policy
        self.exchanges: list[ExchangeSummary] = []
        self.warnings: list[str] = []
        self.warnings_not_listed = 0
        self.seen_urls: set[str] = set()
        self._payloads: dict[str, tuple[str, str, datetime]] = {}
        self._lock = threading.RLock()
        self._digest: Digest | None = None
        self.url_counts: dict[str, int] = {}
        """URLs found during the capture that were left out or stripped (count_url)."""
        self.discovered_media: list[str] = []
        """Media URLs a fetcher saw but did not fetch as media (the browser's <video>
        sources and audio/video/HLS/DASH responses), in order, for the media fetcher."""

    @property
    def total_bytes(self) -> int:
        """Bytes received so far by every exchange of the capture."""
        return self.budget.bytes_received

    def warn(self, message: str) -> None:
        with self._lock:
            if len(self.warnings) < MAX_WARNINGS:
                self.warnings.append(message)
            else:
                self.warnings_not_listed += 1

    def listed_warnings(self) -> tuple[str, ...]:
        """The warnings kept, and how many more there were."""
        with self._lock:
            more = ((f"{self.warnings_not_listed} more warning(s) not listed",)
                    if self.warnings_not_listed else ())
            return (*self.warnings, *more)

    def add_discovered_media(self, url: str) -> None:
        """Hand a media URL to the fetchers that run later (thread-safe, no duplicates)."""
        with self._lock:
            if url not in self.discovered_media:
                self.discovered_media.append(url)

    def limit_for(self, role: Role) -> int:
        """Bytes a response of ``role`` may take on the wire, within the total budget."""
        per = {
            "page": self.options.max_response_bytes,
            "media": self.options.max_media_bytes,
        }.get(role, self.options.max_subresource_bytes)
        return max(0, min(per, self.options.max_total_bytes - self.total_bytes))

    # -- exchanges --------------------------------------------------------------------

    def follow(
        self,
        request: OutgoingRequest,
        *,
        role: Role,
        body: IO[bytes] | None = None,
        parse_links: bool = False,
        deadline: Deadline | None = None,
        on_headers: Callable[[int, httpx.Headers], bool] | None = None,
    ) -> tuple[Exchange, list[tuple[str, int]]]:
        """:meth:`exchange`, following redirects (each hop recorded and guarded).

        Returns the last exchange and the ``(url, status)`` of every redirect hop. Raises
        as :meth:`exchange`, :class:`TooManyRedirects` past ``max_redirects``,
        :class:`FetchRefused` for a ``Location`` the archive never fetches (a scheme other
        than http/https; an address the guard refuses is refused by the next exchange), and
        :class:`FetchFailed` for a ``Location`` that is not a valid URL.
        """
        redirects: list[tuple[str, int]] = []
        current = request
        while True:
            done = self.exchange(current, role=role, body=body, parse_links=parse_links,
                                 deadline=deadline, on_headers=on_headers)
            location = done.location
            if location is None or done.truncated:
                return done, redirects
            redirects.append((done.url, done.status))
            if len(redirects) > self.options.max_redirects:
                raise TooManyRedirects(
                    f"more than {self.options.max_redirects} redirects fetching "
                    f"{request.url} (capture.max_redirects); last hop {done.url} → {location}"
                )
            try:
                target = urljoin(done.url, location)
                checked_url(target, userinfo="strip")
            except RefusedUrl as exc:  # a well-formed URL never fetched, e.g. file:///etc/passwd
                self.count_url("invalid")
                raise FetchRefused(
                    f"refusing to fetch the redirect from {done.url}: {exc}"
                ) from exc
            except (ValueError, BadUrl) as exc:  # e.g. "http://[bad" is not a URL at all
                self.count_url("invalid")
                raise FetchFailed(
                    f"{done.url} redirected to an invalid Location "
                    f"{redacted(location)[:200]!a}: {exc}"
                ) from exc
            current = redirected_request(current, done.status, target)

    def exchange(
        self,
        request: OutgoingRequest,
        *,
        role: Role,
        body: IO[bytes] | None = None,
        parse_links: bool = False,
        deadline: Deadline | None = None,
        on_headers: Callable[[int, httpx.Headers], bool] | None = None,
        on_body: Callable[[], None] | None = None,
    ) -> Exchange:
        """Send ``request`` once over a fresh, guarded, recorded connection.

        The entity body of a non-redirect response is written to ``body`` when given.
        With ``parse_links`` the links of an HTML page (role ``page``) or a stylesheet
        (other roles) are extracted while the body streams. A response over the role's
        byte limit is kept truncated (``truncated``, ``WARC-Truncated: length``); what
        the caller does with that is its decision. ``on_headers(status, headers)`` is
        called once the response headers are in (redirects included); when it returns
        False, or the ``body`` file raises :class:`StopReading`, the rest of the response
        is not read and the record is kept truncated the same way. ``on_body()`` is
        called once the whole entity body is in ``body`` and before the exchange is
        written into the WARC, so a reader can finish with the body meanwhile.

        Raises FetchRefused (scheme, or an address the guard refuses), FetchTimeout,
        TlsError, FetchFailed, BudgetExhausted (the capture's budget is spent: nothing
        is sent).
        """
        deadline = deadline or self.deadline
        if self.budget.deadline.remaining() < deadline.remaining():
            deadline = self.budget.deadline  # no fetcher's limit outlasts the capture's
        request = self._without_credentials(request)
        parsed = check_url(
            request.url, allow_private_networks=self.options.allow_private_networks,
            policy=self.policy,
        )
        url = str(parsed)
        with self._lock:
            self.seen_urls.add(url)
        self.budget.take_request(role, url)
        if deadline.expired:
            raise FetchTimeout(
                f"the capture time limit of {deadline.seconds:g} s ran out "
                f"before fetching {url}"
            )
        # The network part runs without the lock (each exchange has its own connection
        # and spool), so a slow response does not hold up the browser's other requests;
        # only writing the records, in _record, is serialised. Bytes are metered by the
        # capture's budget as they arrive, so exchanges running at once cannot pass
        # max_total_bytes together.
        meter = self.budget.transfer()
        wire = Wire(self.spool_dir, limit=self.limit_for(role), meter=meter)
        try:
            return self._exchange(request, url, parsed, role, wire, body, parse_links,
                                  deadline, on_headers, on_body)
        finally:
            wire.close()
            meter.end()

    def check_target(self, url: str) -> None:
        """Raise :class:`FetchRefused` when the guard refuses ``url`` before any socket
        (scheme, a URL that is not one, a literal address it refuses); a host name is
        judged only when resolved, at connect time. Nothing is sent, counted or recorded."""
        check_url(url, allow_private_networks=self.options.allow_private_networks,
                  policy=self.policy)

    def count_url(self, what: str, count: int = 1) -> None:
        """Count a URL found during the capture that was left out (``invalid``) or
        stripped of its user name and password (``userinfo_stripped``); the counts go
        into the capture's provenance."""
        if count:
            with self._lock:
                self.url_counts[what] = self.url_counts.get(what, 0) + count

    def _without_credentials(self, request: OutgoingRequest) -> OutgoingRequest:
        """``request`` without a user name or password in its URL, nor the
        ``Authorization`` a client (Chromium) made of them: credentials taken from a URL
        are never sent, nor kept in the WARC. A URL :func:`~archiver.urls.check_url`
        refuses is counted and refused (:class:`FetchRefused`)."""
        try:
            checked = checked_url(request.url, userinfo="strip")
        except BadUrl as exc:
            self.count_url("invalid")
            raise FetchRefused(f"refusing to fetch: {exc}") from exc
        if not checked.had_userinfo:
            return request
        self.count_url("userinfo_stripped")
        return replace(request, url=checked.url, headers=tuple(
            (k, v) for k, v in request.headers if k.lower() != "authorization"))

    def _exchange(
        self,
        request: OutgoingRequest,
        url: str,
        parsed: httpx.URL,
        role: Role,
        wire: Wire,
        body: IO[bytes] | None,
        parse_links: bool,
        deadline: Deadline,
        on_headers: Callable[[int, httpx.Headers], bool] | None = None,
        on_body: Callable[[], None] | None = None,
    ) -> Exchange:
        backend = RecordingBackend(
            url=url, wire=wire, deadline=deadline,
            allow_private_networks=self.options.allow_private_networks, policy=self.policy,
        )
        started = self.clock()
        try:
            with GuardedTransport(
                backend, ssl_context=self.ssl_context,
                time_limit=f"the capture time limit of {deadline.seconds:g} s",
            ) as transport:
                status, reason, headers, sink, writer, truncated = self._transfer(
                    transport, request, parsed, role, wire, body, parse_links, on_headers
                )
        except (FetchTimeout, FetchFailed) as exc:
            if wire.request.size:
                # The request went out: what came back (maybe nothing) is part of the
                # record. WARC-Truncated says why it is incomplete.
                cut = "time" if isinstance(exc, FetchTimeout) else "disconnect"
                self._record(url, request.method, role, wire, None, started, self.clock(),
                             None, cut)
            raise
        ended = self.clock()
        if on_body is not None and writer is not None and not truncated \
                and writer.problem is None:
            on_body()
        summary, revisit_of = self._record(url, request.method, role, wire,
                                           status or None, started, ended,
                                           _payload_type(headers), None)
        done = Exchange(
            url=url, method=request.method, status=status, reason=reason, headers=headers,
            summary=summary, truncated=truncated,
            tls=wire.tls if wire.tls is not None and wire.tls.chain_der else None,
            body_size=writer.size if writer is not None else 0,
            body_problem=writer.problem if writer is not None else None,
            body_limit=writer.limit if isinstance(writer, _BodyWriter) else None,
            body_encoding=writer.unsupported if isinstance(writer, _BodyWriter) else None,
            revisit_of=revisit_of,
        )
        if sink is not None and not truncated:
            if sink.problem is not None:
                self.warn(f"{url}: {sink.problem}")
            done.links = sink.links(url)
            for what, count in sink.url_counts.items():
                self.count_url(what, count)
        return done

    def _transfer(
        self,
        transport: GuardedTransport,
        request: OutgoingRequest,
        parsed: httpx.URL,
        role: Role,
        wire: Wire,
        body: IO[bytes] | None,
        parse_links: bool,
        on_headers: Callable[[int, httpx.Headers], bool] | None,
    ) -> tuple[int, str, httpx.Headers, _LinkSink | None, _BodyWriter | _SpoolView | None,
               bool]:
        """Send the request and read the response through ``wire``."""
        status, reason, headers = 0, "", httpx.Headers()
        sink: _LinkSink | None = None
        writer: _BodyWriter | _SpoolView | None = None
        truncated = False
        try:
            response = transport.handle_request(self._request(request, parsed, role))
            try:
                status, headers = response.status_code, response.headers
                reason = response.reason_phrase
                self.budget.announce(headers.get("content-length"))
                if on_headers is not None and not on_headers(status, headers):
                    raise StopReading
                if parse_links:
                    sink = self._sink_for(role, response)
                if body is not None and status not in REDIRECT_STATUSES:
                    writer = self._body_writer(body, headers, wire, role)
                for chunk in response.iter_raw():
                    if sink is not None:
                        sink.feed(chunk)
                    if writer is not None:
                        writer.feed(chunk)
            finally:
                response.close()
        except ByteLimitReached:
            truncated = True
        except StopReading:
            # The caller wants no more of it: keep what arrived (what httpcore had
            # read past the headers too), marked truncated since it may be partial.
            truncated = True
            wire.response.truncated = True
        return status, reason, headers, sink, writer, truncated

    def _body_writer(self, body: IO[bytes], headers: httpx.Headers, wire: Wire,
                     role: Role) -> _BodyWriter | _SpoolView:
        spool = wire.response
        fileno = spool.fileno()
        raw_is_body = (
            headers.get("content-encoding", "identity").strip().lower() in ("", "identity")
            and "transfer-encoding" not in headers and spool.headers_complete
        )
        if isinstance(body, SpoolReader) and raw_is_body and fileno is not None:
            return _SpoolView(body, spool, fileno)
        return _BodyWriter(body, headers.get("content-encoding"),
                           limit=self.options.max_decoded_bytes,
                           ratio=self.options.max_decode_ratio)

    def _record(
        self,
        url: str,
        method: str,
        role: Role,
        wire: Wire,
        status: int | None,
        started: datetime,
        ended: datetime,
        payload_type: str | None,
        cut: str | None,
    ) -> tuple[ExchangeSummary, str | None]:
        with self._lock:
            return self._write(url, method, role, wire, status, started, ended,
                               payload_type, cut)

    def _sink_for(self, role: Role, response: httpx.Response) -> _LinkSink | None:
        if not 200 <= response.status_code < 300:
            return None
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if role == "page" and media in HTML_TYPES:
            return _LinkSink("html", response, options=self.options)
        if role != "page" and media == "text/css":
            return _LinkSink("css", response, options=self.options)
        return None

    def _request(self, request: OutgoingRequest, url: httpx.URL, role: Role) -> httpx.Request:
        headers = [(k, v) for k, v in request.headers if k.lower() not in _HOP_BY_HOP]
        names = {k.lower() for k, _ in headers}
        if "user-agent" not in names:
            headers.insert(0, ("User-Agent", self.options.user_agent))
        if "accept" not in names:
            headers.append(("Accept", (
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
                if role == "page" else "*/*"
            )))
        headers += [("Accept-Encoding", ACCEPT_ENCODING), ("Connection", "close")]
        return httpx.Request(request.method, url, headers=headers,
                             content=request.content or None)

    def _write(
        self,
        url: str,
        method: str,
        role: Role,
        wire: Wire,
        status: int | None,
        started: datetime,
        ended: datetime,
        payload_type: str | None = None,
        cut: str | None = None,
    ) -> tuple[ExchangeSummary, str | None]:
        request_id = self.warc.record_id()
        response_id = self.warc.record_id()
        peer_ip, peer_port = wire.peer if wire.peer is not None else (None, None)
        self.warc.write_http(
            "request", record_id=request_id, url=url, date=started, spool=wire.request,
            peer_ip=peer_ip, concurrent_to=response_id,
        )
        revisit_of = self._write_response(url, wire, response_id, request_id, peer_ip,
                                          status, started, payload_type, cut)
        certificate_id = None
        if wire.tls is not None and wire.tls.chain_der:
            certificate_id = self.warc.record_id()
            self.warc.write_certificate_chain(
                record_id=certificate_id, url=url, date=started, pem=wire.tls.chain_pem,
                refers_to=response_id,
            )
        summary = ExchangeSummary(
            url=url, method=method, role=role, status=status, peer_ip=peer_ip,
            peer_port=peer_port, request_record_id=request_id,
            response_record_id=response_id, certificate_record_id=certificate_id,
            response_bytes=wire.response.size, truncated=wire.response.truncated,
            started=started, ended=ended, revisit_of=revisit_of,
            payload_digest=(wire.response.payload_digest
                            if wire.response.headers_complete else None),
        )
        self.exchanges.append(summary)
        return summary, revisit_of

    def _write_response(
        self,
        url: str,
        wire: Wire,
        response_id: str,
        request_id: str,
        peer_ip: str | None,
        status: int | None,
        started: datetime,
        payload_type: str | None,
        cut: str | None,
    ) -> str | None:
        spool = wire.response
        payload_size = spool.size - spool.header_size
        earlier = None
        if (
            status is not None and 200 <= status < 300 and not spool.truncated
            and cut is None and payload_size > 0
        ):
            earlier = self._payloads.get(spool.payload_digest)
        header_block = spool.header_block() if earlier is not None else None
        if earlier is not None and header_block is not None:
            refers_to, refers_url, refers_date = earlier
            self.warc.write_revisit(
                record_id=response_id, url=url, date=started, header_block=header_block,
                payload_digest=spool.payload_digest, peer_ip=peer_ip,
                concurrent_to=request_id, refers_to=refers_to, refers_to_url=refers_url,
                refers_to_date=refers_date,
            )
            return refers_to
        self.warc.write_http(
            "response", record_id=response_id, url=url, date=started, spool=spool,
            peer_ip=peer_ip, concurrent_to=request_id, payload_type=payload_type,
            truncated=cut,
        )
        if status is not None and 200 <= status < 300 and not spool.truncated and not cut:
            self._payloads.setdefault(spool.payload_digest, (response_id, url, started))
        return None

    # -- other records ------------------------------------------------------------------

    def write_file(
        self,
        rec_type: Literal["resource", "conversion", "metadata"],
        *,
        url: str,
        path: Path,
        content_type: str,
        refers_to: str | None = None,
        refers_to_url: str | None = None,
        extra: Mapping[str, str] | None = None,
        digest: Digest | None = None,
    ) -> tuple[str, Digest]:
        """Add a file the capture derived (a merged video, a screenshot, info.json) as a
        record of this WARC; returns its record id and the file's digest. With
        ``digest`` (computed by the caller in its own pass) the file is read once, to
        write it; the WARC's block digest is then that digest, checked as it streams."""
        fields: list[tuple[str, str]] = []
        if refers_to is not None:
            fields.append(("WARC-Refers-To", refers_to))
        if refers_to_url is not None:
            fields.append(("WARC-Refers-To-Target-URI", refers_to_url))
        fields += list((extra or {}).items())
        with self._lock:
            record_id = self.warc.record_id()
            written = self.warc.write_file_record(
                rec_type, record_id=record_id, url=url, date=self.clock(), path=path,
                content_type=content_type, extra=fields, digest=digest,
            )
        return record_id, written

    def write_identity(self, *, url: str, name: str, digest: Digest, refers_to: str,
                       refers_to_url: str) -> str:
        """Say, in a small ``metadata`` record, that the file ``name`` (``digest``) is
        byte for byte the payload of the response record ``refers_to`` of this WARC, so
        that a video is not stored in the WARC twice. Returns the record's id.

        The caller has checked the identity (the file's SHA-256 is that response's
        ``WARC-Payload-Digest``); anyone can check it again from the two records."""
        with self._lock:
            record_id = self.warc.record_id()
            self.warc.write_fields_record(
                record_id=record_id, url=url, date=self.clock(),
                fields={
                    "file": name,
                    "identical-to": "payload of the response record in WARC-Refers-To",
                    "payload-digest": warc_digest_hex(digest.sha256),
                    "sha256": digest.sha256,
                    "sha512": digest.sha512,
                    "size": str(digest.size),
                },
                extra=[("WARC-Refers-To", refers_to),
                       ("WARC-Refers-To-Target-URI", refers_to_url)],
            )
        return record_id

    def response_record_for(self, url: str) -> str | None:
        """The record id of the last 2xx response (or its revisit) recorded for ``url``."""
        with self._lock:
            for summary in reversed(self.exchanges):
                if summary.url == url and summary.status is not None and (
                    200 <= summary.status < 300
                ):
                    return summary.response_record_id
        return None

    def publish(self) -> Digest:
        """Close the WARC and make it visible at its path; returns the file's digest."""
        with self._lock:
            self._digest = self.warc.publish()
            return self._digest


def _payload_type(headers: httpx.Headers) -> str | None:
    """What the payload bytes are, for choosing how hard to compress them in the WARC."""
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        return "application/gzip"  # compressed already, whatever it decodes to
    value: str | None = headers.get("content-type")
    return value


def redirected_request(previous: OutgoingRequest, status: int, target: str) -> OutgoingRequest:
    """The request a client sends after ``status`` to ``target`` (RFC 9110 §15.4)."""
    method, content, headers = previous.method, previous.content, previous.headers
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, content = "GET", b""
        headers = tuple((k, v) for k, v in headers if k.lower() != "content-type")
    if urlsplit(target).netloc != urlsplit(previous.url).netloc:
        headers = tuple((k, v) for k, v in headers if k.lower() not in _CREDENTIALS)
    return OutgoingRequest(url=target, method=method, headers=headers, content=content)


@contextmanager
def open_session(
    warc_path: Path,
    *,
    options: RecorderOptions,
    warcinfo: Mapping[str, str],
    clock: Callable[[], datetime] = utc_now,
    new_record_id: Callable[[], str] = new_record_id,
    address_policy: AddressPolicy = non_global_reason,
) -> Iterator[RecordingSession]:
    """A session writing a new WARC at ``warc_path`` (warcinfo first). The file appears
    there only if the caller calls :meth:`RecordingSession.publish`; leaving the block
    without publishing (an exception) deletes it.

    Raises ConfigError when ``options.ca_bundle`` cannot be loaded, FileExistsError
    when ``warc_path`` exists, ValueError for a warcinfo field that would break a record.
    """
    context = _ssl_context(options)
    started = clock()
    with WarcFile(warc_path, new_record_id=new_record_id) as warc:
        warc.write_warcinfo(warcinfo, date=started)
        budget = budget_for(options)
        yield RecordingSession(
            warc=warc, options=options,
            deadline=Deadline(min(options.timeout_seconds, options.deadline_seconds)),
            clock=clock, ssl_context=context, spool_dir=warc_path.parent,
            policy=address_policy, started=started, budget=budget,
        )


def budget_for(options: RecorderOptions) -> CaptureBudget:
    """A fresh budget of one capture, from ``capture.*`` (see :mod:`.budget`)."""
    return CaptureBudget(max_requests=options.max_requests,
                         max_total_bytes=options.max_total_bytes,
                         seconds=options.deadline_seconds,
                         max_subresources=options.max_subresources)


def _ssl_context(options: RecorderOptions) -> ssl.SSLContext:
    return ssl_context_for(verify_tls=options.verify_tls, ca_bundle=options.ca_bundle)


def ssl_context_for(*, verify_tls: bool, ca_bundle: Path | None) -> ssl.SSLContext:
    """A client context trusting ``ca_bundle`` (default: certifi's), shared between
    callers with the same bundle. Raises ConfigError when it cannot be loaded."""
    if not verify_tls:
        return _unverified_context()
    cafile = ca_bundle if ca_bundle is not None else Path(certifi.where())
    try:
        found = cafile.stat()
        # Keyed on the file's identity and mtime: an edited bundle is loaded afresh.
        return _verifying_context(str(cafile), found.st_ino, found.st_mtime_ns, found.st_size)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"capture.ca_bundle {cafile} cannot be loaded: {exc}") from exc


# Parsing a CA bundle takes longer than a whole local capture, so contexts are built
# once per bundle and shared: an SSLContext is safe to use from several connections.
@functools.lru_cache(maxsize=8)
def _verifying_context(cafile: str, _ino: int, _mtime_ns: int, _size: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=cafile)


@functools.lru_cache(maxsize=1)
def _unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


__all__ = [
    "Exchange",
    "OutgoingRequest",
    "RecordingSession",
    "StopReading",
    "open_session",
    "redirected_request",
]
