"""Record one capture: fetch a URL (its redirects, then its subresources) into one WARC.

Layers, outermost first::

    record_capture            options, limits, redirects, subresources, the result
      └─ _Capture._exchange   one request/response: guard, fetch, spool, write records
           └─ httpx.HTTPTransport → httpcore.ConnectionPool (HTTP/1.1, no keep-alive)
                └─ RecordingBackend / TeeStream   SSRF check at connect, wire bytes, deadline
    WarcFile                  records, atomic publish, file digest while writing

Failures of the main document raise ``archiver.errors`` (httpx, httpcore, ssl and socket
errors are translated in :func:`_translated`, and only there); failures of a subresource
become warnings in the result.
"""

from __future__ import annotations

import functools
import ssl
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal
from urllib.parse import urljoin

import certifi
import httpcore
import httpx

from archiver.clock import utc_now
from archiver.errors import (
    CaptureError,
    ConfigError,
    FetchFailed,
    FetchTimeout,
    ResponseTooLarge,
    TlsError,
    TooManyRedirects,
)
from archiver.recorder.guard import AddressPolicy, check_url, non_global_reason
from archiver.recorder.links import (
    BodyDecoder,
    CssUrlScanner,
    Link,
    PageLinkParser,
    resolve_links,
    text_decoder,
)
from archiver.recorder.warcfile import WarcFile
from archiver.recorder.wire import ByteLimitReached, Deadline, RecordingBackend, Wire
from chain_of_custody.digest import Digest

MiB = 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HTML_TYPES = ("text/html", "application/xhtml+xml")
# Decoded text fed to the link extractors per document. Bounds parser memory (an
# unterminated comment is buffered by html.parser) and CPU against decompression bombs.
PARSE_LIMIT = 32 * MiB
MAX_LINKS = 10_000

Role = Literal["page", "subresource"]


def new_record_id() -> str:
    """A fresh WARC-Record-ID, ``<urn:uuid:…>``."""
    return f"<urn:uuid:{uuid.uuid4()}>"


@dataclass(frozen=True, slots=True, kw_only=True)
class RecorderOptions:
    """Limits and switches of one capture (``capture.*`` in the configuration).

    Byte limits count the response as received on the wire (status line, headers and
    body, still compressed and chunked), which is what the WARC record holds.
    """

    allow_private_networks: bool = False
    timeout_seconds: float = 120.0
    max_redirects: int = 10
    max_response_bytes: int = 512 * MiB
    fetch_subresources: bool = True
    max_subresources: int = 300
    max_subresource_bytes: int = 100 * MiB
    max_total_bytes: int = 2048 * MiB
    verify_tls: bool = True
    ca_bundle: Path | None = None
    user_agent: str = "evidence-archiver"

    def __post_init__(self) -> None:
        if not self.timeout_seconds > 0:
            raise ValueError("timeout_seconds must be > 0")
        for name in ("max_response_bytes", "max_subresource_bytes", "max_total_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("max_redirects", "max_subresources"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if "\r" in self.user_agent or "\n" in self.user_agent:
            raise ValueError("user_agent must be one line")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExchangeSummary:
    """One recorded request/response pair (a redirect hop is an exchange of its own)."""

    url: str
    method: str
    role: Role
    status: int | None  # None only when a truncated response ended inside its headers
    peer_ip: str | None
    peer_port: int | None
    request_record_id: str
    response_record_id: str
    certificate_record_id: str | None
    response_bytes: int
    truncated: bool
    started: datetime
    ended: datetime


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
    context = _ssl_context(options)
    started = clock()
    deadline = Deadline(options.timeout_seconds)
    with WarcFile(warc_path, new_record_id=new_record_id) as warc:
        warc.write_warcinfo(warcinfo, date=started)
        capture = _Capture(
            warc=warc, options=options, deadline=deadline, clock=clock,
            ssl_context=context, spool_dir=warc_path.parent, policy=address_policy,
        )
        page, redirects = capture.fetch_page(url)
        subresources = capture.fetch_subresources(page) if page.links else 0
        ended = clock()
        digest = warc.publish()
    tls = page.wire_tls
    return RecordingResult(
        requested_url=url,
        final_url=page.url,
        status=page.status,
        peer_ip=page.summary.peer_ip,
        peer_port=page.summary.peer_port,
        tls_certificate_sha256=tls[0] if tls else None,
        tls_chain_pem=tls[1] if tls else None,
        redirects=tuple(redirects),
        exchanges=tuple(capture.exchanges),
        subresources_fetched=subresources,
        warnings=tuple(capture.warnings),
        started=started,
        ended=ended,
        warc_digest=digest,
        page_content_type=page.content_type,
    )


def _ssl_context(options: RecorderOptions) -> ssl.SSLContext:
    """Raises ConfigError when ``ca_bundle`` cannot be loaded."""
    if not options.verify_tls:
        return _unverified_context()
    cafile = options.ca_bundle if options.ca_bundle is not None else Path(certifi.where())
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


@contextmanager
def _translated(url: str, deadline: Deadline) -> Iterator[None]:
    """The one place where httpx/httpcore/ssl/socket failures become archiver errors.

    httpcore maps socket and ssl errors to its own exceptions (``raise … from exc``) and
    httpx maps those to its own; we walk the cause chain for the ssl error underneath.
    Our own signals (FetchRefused from the guard, ByteLimitReached) pass through both
    libraries untouched and are not handled here.
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise FetchTimeout(
            f"the capture time limit of {deadline.seconds:g} s ran out while fetching {url}"
        ) from exc
    except httpx.TransportError as exc:
        tls = _ssl_cause(exc)
        if tls is not None:
            if isinstance(tls, ssl.SSLCertVerificationError):
                shown = f"certificate verify failed: {tls.verify_message}"
            else:
                shown = str(tls.reason or tls)
            raise TlsError(f"TLS failure fetching {url}: {shown}") from exc
        raise FetchFailed(f"could not fetch {url}: {exc or type(exc).__name__}") from exc
    except (httpcore.ProtocolError, httpcore.NetworkError) as exc:  # outside httpx's map
        raise FetchFailed(f"could not fetch {url}: {exc or type(exc).__name__}") from exc


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class _LinkSink:
    """Feeds a response body (as received) to a link extractor, decoding on the way."""

    def __init__(self, kind: Literal["html", "css"], response: httpx.Response) -> None:
        self.kind = kind
        self._decoder = BodyDecoder(
            response.headers.get("content-encoding"), max_output=PARSE_LIMIT
        )
        self._text = text_decoder(response.charset_encoding)
        self._html = PageLinkParser(max_links=MAX_LINKS) if kind == "html" else None
        self._css = CssUrlScanner() if kind == "css" else None
        self.problem: str | None = None
        if not self._decoder.supported:
            encoding = response.headers.get("content-encoding")
            self.problem = f"content-encoding {encoding!r} not decoded, links not followed"

    def feed(self, raw: bytes) -> None:
        if self.problem is not None:
            return
        try:
            data = self._decoder.feed(raw)
        except zlib.error as exc:
            self.problem = f"body could not be decoded for link extraction ({exc})"
            return
        self._parse(self._text.decode(data))
        if self._decoder.exhausted:
            self.problem = f"links after the first {PARSE_LIMIT} decoded bytes not followed"

    def _parse(self, text: str) -> None:
        if self._html is not None:
            self._html.feed(text)
        elif self._css is not None:
            self._css.feed(text)

    def links(self, document_url: str) -> list[Link]:
        if self.problem is None:
            self._parse(self._text.decode(b"", final=True))
        if self._html is not None:
            return self._html.finish(document_url)
        assert self._css is not None
        self._css.close()
        return resolve_links(document_url, [(u, "other") for u in self._css.found[:MAX_LINKS]])


@dataclass(slots=True)
class _Fetched:
    url: str
    summary: ExchangeSummary
    status: int
    location: str | None
    content_type: str | None
    truncated: bool
    wire_tls: tuple[str, str] | None  # (leaf SHA-256 hex, chain PEM)
    links: list[Link] = field(default_factory=list)


class _Capture:
    """The state of one capture while it runs (exchanges, warnings, byte budget)."""

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
    ) -> None:
        self.policy = policy
        self.warc = warc
        self.options = options
        self.deadline = deadline
        self.clock = clock
        self.ssl_context = ssl_context
        self.spool_dir = spool_dir
        self.exchanges: list[ExchangeSummary] = []
        self.warnings: list[str] = []
        self.total_bytes = 0
        self.seen_urls: set[str] = set()

    # -- the page ---------------------------------------------------------------------

    def fetch_page(self, url: str) -> tuple[_Fetched, list[tuple[str, int]]]:
        """The main document and its redirect hops; raises archiver.errors."""
        fetched, redirects = self._follow(url, role="page")
        if fetched.truncated:
            raise ResponseTooLarge(
                f"the response from {fetched.url} is larger than "
                f"{fetched.summary.response_bytes} bytes ({self._page_limit_name()})"
            )
        return fetched, redirects

    def _page_limit_name(self) -> str:
        if self.options.max_total_bytes < self.options.max_response_bytes:
            return "capture.max_total_bytes"
        return "capture.max_response_bytes"

    def _follow(self, url: str, *, role: Role) -> tuple[_Fetched, list[tuple[str, int]]]:
        redirects: list[tuple[str, int]] = []
        current = url
        while True:
            fetched = self._exchange(current, role=role)
            if fetched.location is None or fetched.truncated:
                return fetched, redirects
            redirects.append((current, fetched.status))
            if len(redirects) > self.options.max_redirects:
                raise TooManyRedirects(
                    f"more than {self.options.max_redirects} redirects fetching {url} "
                    f"(capture.max_redirects); last hop {current} → {fetched.location}"
                )
            try:
                current = urljoin(current, fetched.location)
            except ValueError as exc:  # e.g. "http://[bad" is not a URL at all
                raise FetchFailed(
                    f"{current} redirected to an invalid Location {fetched.location!r}"
                ) from exc

    # -- one exchange -----------------------------------------------------------------

    def _limit(self, role: Role) -> int:
        per = (
            self.options.max_response_bytes if role == "page"
            else self.options.max_subresource_bytes
        )
        return max(0, min(per, self.options.max_total_bytes - self.total_bytes))

    def _request(self, url: httpx.URL, role: Role) -> httpx.Request:
        accept = (
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
            if role == "page" else "*/*"
        )
        return httpx.Request(
            "GET",
            url,
            headers=[
                ("User-Agent", self.options.user_agent),
                ("Accept", accept),
                # Only what we can decode for link extraction; the WARC keeps it encoded.
                ("Accept-Encoding", "gzip, deflate"),
                ("Connection", "close"),
            ],
        )

    def _transport(self, backend: RecordingBackend) -> httpx.HTTPTransport:
        transport = httpx.HTTPTransport(
            verify=self.ssl_context, http1=True, http2=False, retries=0
        )
        # httpx has no public parameter for an httpcore network backend; its transport
        # sends every request through ``_pool``, so we give it a pool built on ours.
        # HTTP/1.1 only (the WARC records HTTP/1.x text); no keep-alive and no retries:
        # one connection per exchange, so a connection's bytes are one exchange's bytes.
        transport._pool = httpcore.ConnectionPool(
            ssl_context=self.ssl_context,
            max_connections=1,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )
        return transport

    def _exchange(self, url: str, *, role: Role) -> _Fetched:
        parsed = check_url(
            url, allow_private_networks=self.options.allow_private_networks, policy=self.policy
        )
        url = str(parsed)
        self.seen_urls.add(url)
        if self.deadline.expired:
            raise FetchTimeout(
                f"the capture time limit of {self.deadline.seconds:g} s ran out "
                f"before fetching {url}"
            )
        wire = Wire(self.spool_dir, limit=self._limit(role))
        try:
            backend = RecordingBackend(
                url=url, wire=wire, deadline=self.deadline,
                allow_private_networks=self.options.allow_private_networks,
                policy=self.policy,
            )
            started = self.clock()
            status: int | None = None
            headers: httpx.Headers | None = None
            sink: _LinkSink | None = None
            truncated = False
            with _translated(url, self.deadline), self._transport(backend) as transport:
                try:
                    response = transport.handle_request(self._request(parsed, role))
                    try:
                        status, headers = response.status_code, response.headers
                        sink = self._sink_for(role, response)
                        for chunk in response.iter_raw():
                            if sink is not None:
                                sink.feed(chunk)
                    finally:
                        response.close()
                except ByteLimitReached:
                    truncated = True
            ended = self.clock()
            self.total_bytes += wire.response.size
            summary = self._write(url, role, wire, status, started, ended)
            fetched = _Fetched(
                url=url,
                summary=summary,
                status=status if status is not None else 0,
                location=(
                    headers.get("location")
                    if headers is not None and status in REDIRECT_STATUSES else None
                ),
                content_type=headers.get("content-type") if headers is not None else None,
                truncated=truncated,
                wire_tls=(
                    (wire.tls.leaf_sha256 or "", wire.tls.chain_pem)
                    if wire.tls is not None and wire.tls.chain_der else None
                ),
            )
            if sink is not None and not truncated:
                if sink.problem is not None:
                    self.warnings.append(f"{url}: {sink.problem}")
                fetched.links = sink.links(url)
            return fetched
        finally:
            wire.close()

    def _sink_for(self, role: Role, response: httpx.Response) -> _LinkSink | None:
        if not self.options.fetch_subresources or not 200 <= response.status_code < 300:
            return None
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if role == "page" and media in HTML_TYPES:
            return _LinkSink("html", response)
        if role == "subresource" and media == "text/css":
            return _LinkSink("css", response)
        return None

    def _write(
        self,
        url: str,
        role: Role,
        wire: Wire,
        status: int | None,
        started: datetime,
        ended: datetime,
    ) -> ExchangeSummary:
        request_id = self.warc.record_id()
        response_id = self.warc.record_id()
        peer_ip, peer_port = wire.peer if wire.peer is not None else (None, None)
        self.warc.write_http(
            "request", record_id=request_id, url=url, date=started, spool=wire.request,
            peer_ip=peer_ip, concurrent_to=response_id,
        )
        self.warc.write_http(
            "response", record_id=response_id, url=url, date=started, spool=wire.response,
            peer_ip=peer_ip, concurrent_to=request_id,
        )
        certificate_id = None
        if wire.tls is not None and wire.tls.chain_der:
            certificate_id = self.warc.record_id()
            self.warc.write_certificate_chain(
                record_id=certificate_id, url=url, date=started, pem=wire.tls.chain_pem,
                refers_to=response_id,
            )
        summary = ExchangeSummary(
            url=url, method="GET", role=role, status=status, peer_ip=peer_ip,
            peer_port=peer_port, request_record_id=request_id,
            response_record_id=response_id, certificate_record_id=certificate_id,
            response_bytes=wire.response.size, truncated=wire.response.truncated,
            started=started, ended=ended,
        )
        self.exchanges.append(summary)
        return summary

    # -- subresources -----------------------------------------------------------------

    def fetch_subresources(self, page: _Fetched) -> int:
        """Fetch the page's subresources, then url(...)s of its stylesheets (one level).

        Never raises for a subresource: every failure is a warning. Returns how many
        subresources were recorded (truncated ones included).
        """
        fetched = 0
        queue = [link for link in page.links if link.url not in self.seen_urls]
        css_links: list[Link] = []
        for level in (1, 2):
            for index, link in enumerate(queue):
                if link.url in self.seen_urls:
                    continue
                stop = self._budget_exhausted(fetched, len(queue) - index)
                if stop is not None:
                    self.warnings.append(stop)
                    return fetched
                try:
                    result, _ = self._follow(link.url, role="subresource")
                except CaptureError as exc:
                    self.warnings.append(f"subresource not captured: {exc}")
                    continue
                fetched += 1
                if result.truncated:
                    self.warnings.append(
                        f"subresource {result.url} truncated at "
                        f"{result.summary.response_bytes} bytes (capture.max_subresource_bytes"
                        " or capture.max_total_bytes); recorded with WARC-Truncated: length"
                    )
                if level == 1:
                    css_links += result.links
            queue = [link for link in css_links if link.url not in self.seen_urls]
        return fetched

    def _budget_exhausted(self, fetched: int, left: int) -> str | None:
        if fetched >= self.options.max_subresources:
            return (
                f"{left} subresource(s) not fetched: capture.max_subresources = "
                f"{self.options.max_subresources} reached"
            )
        if self.total_bytes >= self.options.max_total_bytes:
            return f"{left} subresource(s) not fetched: capture.max_total_bytes reached"
        if self.deadline.expired:
            return f"{left} subresource(s) not fetched: the capture time limit ran out"
        return None
