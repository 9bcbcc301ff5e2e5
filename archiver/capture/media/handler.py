"""yt-dlp's HTTP, sent through the capture's recording session.

Why a request handler and not yt-dlp's ``proxy`` option: a recording proxy would be a
second recorder (its own TLS interception, its own WARC writer, a CA for yt-dlp to
trust), and what it recorded would be the proxy's view: yt-dlp's requests re-encrypted
to a certificate we made. A request handler hands us each request *before* any socket
exists, so every exchange goes through :meth:`RecordingSession.exchange` exactly like
the page fetcher's: the same SSRF guard at connect time, the same exact wire bytes, the
server's own certificate chain, one WARC.

Why not ``register_rh``: yt-dlp's handler registry is process-global, and a director
built from it holds every registered handler (urllib, requests, websockets, curl_cffi);
a preference only orders them, so a request our handler refused would fall through to
one that fetches it unrecorded. :class:`RecordingYoutubeDL` builds its director from
:class:`RecorderRH` alone, bound to one capture's :class:`MediaTraffic`: nothing else
can send a request, and concurrent captures in one process never share a WARC.

Streaming: yt-dlp reads responses as streams, and sometimes stops early (the generic
extractor reads a few bytes of a URL to see whether it is a video, then downloads it
again with its downloader). Each request therefore runs in a thread that writes the
entity body to a temporary file in the capture's directory while yt-dlp reads it back
from there: bodies never sit in memory, a download is recorded while it is consumed,
and a response yt-dlp stops reading (closes, or leaves behind by sending its next
request) is cut short (:class:`~archiver.recorder.session.StopReading`) and kept
truncated in the WARC instead of being downloaded in full for nothing.

Errors reaching yt-dlp are ``yt_dlp.networking`` exceptions (yt-dlp retries transport
errors, and every retry is recorded); the archiver error underneath is kept as their
``cause`` so :mod:`archiver.capture.media.outcomes` can name the reason.
"""

from __future__ import annotations

import email.message
import functools
import io
import os
import sys
import tempfile
import threading
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urljoin

import httpx
from yt_dlp import YoutubeDL
from yt_dlp.downloader import get_suitable_downloader
from yt_dlp.downloader.dash import DashSegmentsFD
from yt_dlp.downloader.f4m import F4mFD
from yt_dlp.downloader.hls import HlsFD
from yt_dlp.downloader.http import HttpFD
from yt_dlp.downloader.ism import IsmFD
from yt_dlp.downloader.mhtml import MhtmlFD
from yt_dlp.networking.common import RequestHandler, Response
from yt_dlp.networking.exceptions import HTTPError, RequestError, TransportError
from yt_dlp.utils import YoutubeDLError

from archiver.errors import (
    BudgetExhausted,
    CaptureError,
    FetchRefused,
    FetchTimeout,
    TooManyRedirects,
)
from archiver.recorder.session import (
    REDIRECT_STATUSES,
    Exchange,
    OutgoingRequest,
    RecordingSession,
    StopReading,
    redirected_request,
)
from archiver.recorder.wire import Deadline
from archiver.urls import BadUrl, check_url

# yt-dlp's POST bodies are small API calls; the recorder keeps request bytes in memory.
MAX_REQUEST_BODY = 512 * 1024
# How long a reader waits past the media deadline for the exchange thread to report.
_GRACE_SECONDS = 10.0
# Downloaders that fetch through YoutubeDL.urlopen, i.e. through this module. Everything
# else (FFmpegFD, RtmpFD, external programs) opens its own connections.
_RECORDED_DOWNLOADERS = (HttpFD, HlsFD, DashSegmentsFD, IsmFD, F4mFD, MhtmlFD)


class MediaTooLarge(RequestError):  # type: ignore[misc]
    """A media response passed ``capture.max_media_bytes`` (or ``max_total_bytes``).

    Not a ``TransportError``: yt-dlp retries those, and a retry would only download the
    same bytes up to the same limit again."""


class DecodedTooLarge(RequestError):  # type: ignore[misc]
    """A media response decoded past ``capture.max_decoded_bytes`` or
    ``capture.max_decode_ratio`` (a decompression bomb): what was decoded is not the
    media. Not retried: the same bytes would stop at the same place."""


class UnsupportedEncoding(RequestError):  # type: ignore[misc]
    """A media response in a Content-Encoding the archive does not decode (``br``, a
    chain of codings): recorded as received, never media. Not retried: the same bytes
    would come back the same way."""


class RecorderRefused(RequestError):  # type: ignore[misc]
    """The recorder refused the request (SSRF guard, redirect limit, the capture's
    budget): not worth a retry."""


class RecorderTransportError(TransportError):  # type: ignore[misc]
    """A network, TLS or time failure while recording an exchange."""


class WouldEscapeRecorder(YoutubeDLError):  # type: ignore[misc]
    """The chosen format needs a downloader that opens its own connections (ffmpeg,
    rtmpdump): refused, since those bytes would bypass the recorder and the SSRF guard."""


@dataclass(frozen=True, slots=True)
class RecordedBody:
    """A complete 2xx response yt-dlp received: to tell a downloaded file that is exactly
    one response's payload (said in a small identity record, not stored twice) from one
    made from several (a ``conversion`` record)."""

    url: str
    payload_digest: str
    """``sha256:<BASE32>`` of the payload as received (the record's WARC-Payload-Digest)."""
    response_record_id: str
    """The record holding that payload (the first response, when this one was a revisit)."""


@dataclass(frozen=True, slots=True)
class _Head:
    url: str
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]


class _Transfer:
    """One response while it arrives: the exchange thread appends the entity body to a
    temporary file, yt-dlp's reader reads it back as it grows (``os.pwrite``/``pread``,
    so the two never share a file position)."""

    def __init__(self, directory: Path) -> None:
        # closed in _maybe_close() once both sides are done with it
        self._file = tempfile.TemporaryFile(dir=directory, prefix=".media-body-")  # noqa: SIM115
        self._fd = self._file.fileno()
        self._base = 0  # where the body starts in the file read from
        self._spool_fd: int | None = None  # the response spool's, when reading from it
        self._cond = threading.Condition()
        self._size = 0
        self._head: _Head | None = None
        self._done = False
        self._failure: BaseException | None = None
        self._complete = False  # the whole body is in the file (the record may follow)
        self._abandoned = False
        self._reader_closed = False
        self.too_large = False
        self.thread: threading.Thread | None = None

    # -- the exchange thread ----------------------------------------------------------

    def write(self, data: bytes) -> int:
        with self._cond:
            if self._abandoned:
                raise StopReading
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, self._size)
            with self._cond:
                self._size += written
                self._cond.notify_all()
            view = view[written:]
        return len(data)

    def from_spool(self, fileno: int, offset: int) -> None:
        """The session's :class:`~archiver.recorder.session.SpoolReader`: the body is the
        response's payload as spooled, so yt-dlp reads it from there (a copy of our own
        would write a video to disk once more)."""
        with self._cond:
            self._spool_fd = os.dup(fileno)
            self._base = offset

    def grew(self, size: int) -> None:
        with self._cond:
            if self._abandoned:
                raise StopReading
            self._size = size
            self._cond.notify_all()

    def headers_in(self, url: str, limit: int, status: int, headers: httpx.Headers) -> bool:
        """The session's ``on_headers``: publish the final response's head to yt-dlp;
        False (stop reading) when abandoned or when Content-Length alone is too big."""
        if status in REDIRECT_STATUSES and "location" in headers:
            return True  # a hop: yt-dlp sees only where the redirects end
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            self.too_large = True
        with self._cond:
            self._head = _Head(url, status, "", tuple(headers.multi_items()))
            self._cond.notify_all()
            return not (self._abandoned or self.too_large)

    def body_complete(self) -> None:
        """The whole body is in the file: the reader may reach its end now, while the
        exchange is still being written into the WARC (a video's WARC record and the
        fetcher's digest of yt-dlp's file then run side by side)."""
        with self._cond:
            self._complete = True
            self._cond.notify_all()

    def finish(self, failure: BaseException | None) -> None:
        with self._cond:
            if failure is None and self._head is None:
                failure = RecorderTransportError("the server sent no complete response head")
            self._failure = failure
            self._done = True
            self._cond.notify_all()
        self._maybe_close()

    @property
    def size(self) -> int:
        return self._size

    # -- yt-dlp's side -------------------------------------------------------------------

    def wait_head(self, deadline: Deadline) -> _Head:
        """Block until the final response's head is in; raise what the exchange raised."""
        with self._cond:
            while self._head is None and not self._done:
                if not self._cond.wait(timeout=max(deadline.remaining(), 0) + _GRACE_SECONDS):
                    raise RecorderTransportError("the media time limit ran out")
            if self._head is None:
                assert self._failure is not None
                self._reader_closed = True  # no reader will come: the file can go
                failure = self._failure
            elif self.too_large:
                self._reader_closed = True
                failure = MediaTooLarge(
                    f"{self._head.url} is larger than the media byte limit "
                    "(capture.max_media_bytes or capture.max_total_bytes); not downloaded"
                )
            else:
                return self._head
        self._maybe_close()
        raise failure

    def read_at(self, offset: int, buffer: memoryview, deadline: Deadline) -> int:
        with self._cond:
            while self._size <= offset and not (self._done or self._complete):
                if not self._cond.wait(timeout=max(deadline.remaining(), 0) + _GRACE_SECONDS):
                    raise RecorderTransportError("the media time limit ran out")
            available = self._size - offset
            if available <= 0:
                if self._failure is not None:
                    raise self._failure
                return 0
            fd = self._spool_fd if self._spool_fd is not None else self._fd
        # straight into the caller's buffer: no intermediate bytes object per read
        return os.preadv(fd, [buffer[: min(len(buffer), available)]], self._base + offset)

    def abandon(self) -> None:
        """yt-dlp will read no more: the exchange stops at its next chunk."""
        with self._cond:
            self._abandoned = True

    def close_reader(self) -> None:
        with self._cond:
            self._abandoned = True
            self._reader_closed = True
        self._maybe_close()

    @property
    def done(self) -> bool:
        with self._cond:
            return self._done

    def _maybe_close(self) -> None:
        with self._cond:
            if self._done and self._reader_closed and not self._file.closed:
                self._file.close()
                if self._spool_fd is not None:
                    os.close(self._spool_fd)
                    self._spool_fd = None

    @property
    def released(self) -> bool:
        return self._file.closed

    def dispose(self) -> None:
        """After the exchange ended and yt-dlp is done: release the file whatever the
        reader did (a response yt-dlp dropped without closing)."""
        with self._cond:
            self._reader_closed = True
        self._maybe_close()


class _TransferReader(io.RawIOBase):
    def __init__(self, transfer: _Transfer, deadline: Deadline) -> None:
        super().__init__()
        self._transfer = transfer
        self._deadline = deadline
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._transfer.read_at(self._position, memoryview(buffer).cast("B"),
                                       self._deadline)
        self._position += count
        return count

    def close(self) -> None:
        if not self.closed:
            self._transfer.close_reader()
        super().close()


class _RecordedResponse(Response):  # type: ignore[misc]
    def __init__(self, transfer: _Transfer, head: _Head, deadline: Deadline) -> None:
        super().__init__(fp=_TransferReader(transfer, deadline), url=head.url, headers={},
                         status=head.status, reason=head.reason or None)
        for name, value in head.headers:  # repeated headers (Set-Cookie) kept apart
            self.headers.add_header(name, value)

    def read(self, amt: int | None = None) -> bytes:
        # yt-dlp's Response.read turns *every* exception into a TransportError, which its
        # downloaders retry; ours are already RequestErrors and keep their class.
        try:
            data: bytes = self.fp.read(-1 if amt is None or amt < 0 else amt)
        except RequestError:
            raise
        except OSError as exc:
            raise RecorderTransportError(cause=exc) from exc
        return data


class MediaTraffic:
    """The recorder side of one YoutubeDL: its session, time budget and transfers.

    ``bodies`` lists every complete 2xx body received, by URL, so the fetcher can tell
    which response a downloaded file is exactly (``resource``) and which files were
    made from several (``conversion``).
    """

    def __init__(self, session: RecordingSession, *, deadline: Deadline, workdir: Path) -> None:
        self.session = session
        self.deadline = deadline
        self.workdir = workdir
        self.bodies: list[RecordedBody] = []
        self.requested: set[str] = set()
        """Every URL yt-dlp asked for (so no other route fetches it again)."""
        self._transfers: list[_Transfer] = []
        self._lock = threading.Lock()

    def start(self, request: OutgoingRequest, cookiejar: Any) -> _Transfer:
        # The session records one exchange at a time. yt-dlp, asking for a new response
        # while an earlier one is unread, will not read that one any further (concurrent
        # fragment downloads are off): let it stop instead of holding up this request.
        with self._lock:
            self.requested.add(request.url)
            for earlier in self._transfers:
                if not earlier.done:
                    earlier.abandon()
            # kept until their file is closed (by yt-dlp, or by close() at the end)
            self._transfers = [t for t in self._transfers if not t.released]
            transfer = _Transfer(self.workdir)
            self._transfers.append(transfer)
        thread = threading.Thread(target=self._run, args=(transfer, request, cookiejar),
                                  name="media-exchange", daemon=True)
        transfer.thread = thread
        thread.start()
        return transfer

    def close(self) -> None:
        """Stop every transfer still running and wait for its exchange to be recorded."""
        with self._lock:
            transfers, self._transfers = self._transfers, []
        for transfer in transfers:
            transfer.abandon()
        for transfer in transfers:
            if transfer.thread is not None:
                transfer.thread.join(timeout=max(self.deadline.remaining(), 0) + _GRACE_SECONDS)
            transfer.dispose()

    def _run(self, transfer: _Transfer, request: OutgoingRequest, cookiejar: Any) -> None:
        failure: BaseException | None = None
        try:
            self._follow(transfer, request, cookiejar)
        except (FetchRefused, TooManyRedirects, BudgetExhausted) as exc:
            failure = RecorderRefused(str(exc), cause=exc)
        except FetchTimeout as exc:
            failure = RecorderTransportError(str(exc), cause=exc)
        except CaptureError as exc:  # TLS, network: yt-dlp may retry, and that is recorded
            failure = RecorderTransportError(str(exc), cause=exc)
        except RequestError as exc:
            failure = exc
        except BaseException as exc:  # noqa: BLE001
            # A bug in this thread must surface in yt-dlp's thread, where the capture
            # reports it, not vanish with this thread: hand it over as the failure.
            failure = RequestError(f"recorder failure: {exc!r}", cause=exc)
        finally:
            transfer.finish(failure)

    def _follow(self, transfer: _Transfer, request: OutgoingRequest, cookiejar: Any) -> None:
        session = self.session
        current = request
        hops = 0
        while True:
            outgoing = _with_cookies(current, cookiejar)
            limit = session.limit_for("media")
            exchange = session.exchange(
                # the session only ever calls body.write(); _Transfer is that file
                outgoing, role="media", body=cast(IO[bytes], transfer), deadline=self.deadline,
                on_headers=functools.partial(transfer.headers_in, current.url, limit),
                on_body=transfer.body_complete,
            )
            _store_cookies(cookiejar, current.url, exchange.headers)
            location = exchange.location
            if location is not None and not exchange.truncated:
                hops += 1
                if hops > session.options.max_redirects:
                    raise TooManyRedirects(
                        f"more than {session.options.max_redirects} redirects fetching "
                        f"{request.url} (capture.max_redirects)"
                    )
                current = _redirected(current, exchange.status,
                                      self._without_userinfo(urljoin(exchange.url, location)))
                continue
            self._finished(transfer, exchange)
            return

    def _without_userinfo(self, url: str) -> str:
        """A redirect target without user name and password (counted): yt-dlp is told
        where the redirects ended, and that address becomes its ``webpage_url``."""
        try:
            checked = check_url(url, userinfo="strip")
        except BadUrl:
            return url  # the session refuses it, and says why
        if checked.had_userinfo:
            self.session.count_url("userinfo_stripped")
            return checked.url
        return url

    def _finished(self, transfer: _Transfer, exchange: Exchange) -> None:
        if transfer.too_large or (exchange.truncated and not _was_abandoned(transfer)):
            raise MediaTooLarge(
                f"{exchange.url} passed the media byte limit after "
                f"{exchange.summary.response_bytes} bytes (capture.max_media_bytes or "
                "capture.max_total_bytes); recorded truncated, not kept as media"
            )
        if exchange.body_limit is not None:
            raise DecodedTooLarge(f"{exchange.url}: {exchange.body_problem}")
        if exchange.body_encoding is not None:
            raise UnsupportedEncoding(f"{exchange.url}: {exchange.body_problem}")
        if exchange.body_problem is not None:
            raise RecorderTransportError(f"{exchange.url}: {exchange.body_problem}")
        if exchange.truncated:
            # yt-dlp stopped reading it; should anything still read, it must not take
            # the cut for the end of the body.
            raise RecorderTransportError(
                f"{exchange.url}: yt-dlp stopped reading; recorded truncated")
        payload = exchange.summary.payload_digest
        if 200 <= exchange.status < 300 and payload is not None:
            with self._lock:
                self.bodies.append(RecordedBody(
                    exchange.url, payload,
                    exchange.revisit_of or exchange.summary.response_record_id,
                ))


def _was_abandoned(transfer: _Transfer) -> bool:
    with transfer._cond:
        return transfer._abandoned


def _with_cookies(request: OutgoingRequest, cookiejar: Any) -> OutgoingRequest:
    names = {name.lower() for name, _ in request.headers}
    cookie = cookiejar.get_cookie_header(request.url) if "cookie" not in names else None
    if not cookie:
        return request
    return OutgoingRequest(url=request.url, method=request.method,
                           headers=(*request.headers, ("Cookie", cookie)),
                           content=request.content)


class _CookieResponse:
    """The one method ``http.cookiejar`` asks of a response."""

    def __init__(self, headers: httpx.Headers) -> None:
        self._message = email.message.Message()
        for name, value in headers.multi_items():
            if name.lower() in ("set-cookie", "set-cookie2"):
                self._message[name] = value

    def info(self) -> email.message.Message:
        return self._message


def _store_cookies(cookiejar: Any, url: str, headers: httpx.Headers) -> None:
    if "set-cookie" in headers:
        # only http(s) URLs get here (the session refused any other scheme)
        request = urllib.request.Request(url)  # noqa: S310
        cookiejar.extract_cookies(_CookieResponse(headers), request)


def _redirected(previous: OutgoingRequest, status: int, target: str) -> OutgoingRequest:
    """The session's redirect rules (RFC 9110 §15.4, credentials stay with their site),
    with the Cookie header dropped on every hop: it is recomputed from the jar for the
    new URL."""
    cookieless = replace(previous, headers=tuple(
        (k, v) for k, v in previous.headers if k.lower() != "cookie"))
    return redirected_request(cookieless, status, target)


def _request_body(data: Any) -> bytes:
    if data is None:
        return b""
    if isinstance(data, bytes):
        body = data
    elif hasattr(data, "read"):
        body = data.read(MAX_REQUEST_BODY + 1)
    elif isinstance(data, Iterable):
        body = b"".join(_bounded(data))
    else:
        raise RecorderRefused(f"request body of type {type(data).__name__} not supported")
    if len(body) > MAX_REQUEST_BODY:
        raise RecorderRefused(f"request body larger than {MAX_REQUEST_BODY} bytes")
    return body


def _bounded(chunks: Iterable[bytes]) -> Iterable[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_REQUEST_BODY:
            raise RecorderRefused(f"request body larger than {MAX_REQUEST_BODY} bytes")
        yield chunk


class RecorderRH(RequestHandler):  # type: ignore[misc]
    """yt-dlp's only request handler in a :class:`RecordingYoutubeDL`.

    Proxies are refused (``_SUPPORTED_PROXY_SCHEMES`` is empty, no proxy features): the
    recorder connects to the target itself. The ``timeout`` extension is accepted and
    ignored: the media fetcher's time budget bounds every exchange instead.
    """

    _SUPPORTED_URL_SCHEMES = ("http", "https")
    _SUPPORTED_PROXY_SCHEMES = ()
    _SUPPORTED_FEATURES = ()
    RH_NAME = "recorder"

    def __init__(self, *, traffic: MediaTraffic, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._traffic = traffic

    def _check_extensions(self, extensions: dict[str, Any]) -> None:
        super()._check_extensions(extensions)
        for name in ("cookiejar", "timeout", "legacy_ssl", "keep_header_casing"):
            extensions.pop(name, None)

    def _send(self, request: Any) -> Response:
        headers = self._get_headers(request)
        outgoing = OutgoingRequest(
            url=request.url, method=request.method,
            headers=tuple((str(k), str(v)) for k, v in headers.items()),
            content=_request_body(request.data),
        )
        traffic = self._traffic
        transfer = traffic.start(outgoing, self._get_cookiejar(request))
        head = transfer.wait_head(traffic.deadline)
        response = _RecordedResponse(transfer, head, traffic.deadline)
        if not 200 <= head.status < 300:
            raise HTTPError(response, redirect_loop=False)
        return response


@dataclass(frozen=True, slots=True)
class Problem:
    """An error yt-dlp reported (it carries on with the next item when it can)."""

    message: str
    error: BaseException | None


class RecordingYoutubeDL(YoutubeDL):  # type: ignore[misc]
    """A YoutubeDL whose every request goes through one capture's :class:`MediaTraffic`.

    ``problems`` collects what yt-dlp reports as errors, with the exception behind each
    (with ``ignoreerrors`` it continues past a failed item instead of raising).
    """

    def __init__(self, params: dict[str, Any], *, traffic: MediaTraffic) -> None:
        self._traffic = traffic
        self.problems: list[Problem] = []
        super().__init__(params)

    @functools.cached_property
    def _request_director(self) -> Any:
        # Replaces yt-dlp's director of every globally registered handler: ours only.
        handler: Callable[..., RequestHandler] = functools.partial(
            RecorderRH, traffic=self._traffic)
        return self.build_request_director([handler])

    def process_video_result(self, info_dict: dict[str, Any], download: bool = True) -> Any:
        # A page can give a format URL with a user name and password (<video
        # src="http://user:pw@…">): they go before yt-dlp requests it or writes info.json.
        self._strip_userinfo(info_dict)
        return super().process_video_result(info_dict, download=download)

    def _strip_userinfo(self, value: Any) -> None:
        items = value.items() if isinstance(value, dict) else enumerate(value) \
            if isinstance(value, list) else ()
        for key, item in list(items):
            if isinstance(item, str) and "@" in item and item.startswith(("http:", "https:")):
                try:
                    checked = check_url(item, userinfo="strip")
                except BadUrl:
                    continue
                if checked.had_userinfo:
                    self._traffic.session.count_url("userinfo_stripped")
                    value[key] = checked.url
            elif isinstance(item, dict | list):
                self._strip_userinfo(item)

    def urlopen(self, req: Any) -> Any:
        # yt-dlp turns a URL's user name and password into an Authorization header
        # (YoutubeDL.urlopen) before any handler sees the request; a capture never sends
        # credentials taken from a URL, so they go first (counted in the provenance).
        url = req if isinstance(req, str) else getattr(req, "url", None)
        if isinstance(url, str):
            try:
                checked = check_url(url, userinfo="strip")
            except BadUrl:
                checked = None  # the session refuses it, and says why, when asked
            if checked is not None and checked.had_userinfo:
                self._traffic.session.count_url("userinfo_stripped")
                if isinstance(req, str):
                    req = checked.url
                else:
                    req.url = checked.url
        return super().urlopen(req)

    def trouble(self, message: str | None = None, tb: str | None = None,
                is_error: bool = True) -> None:
        if is_error:
            self.problems.append(Problem(message or "", sys.exception()))
        super().trouble(message, tb, is_error)

    def _write_thumbnails(self, label: str, info_dict: dict[str, Any], filename: str,
                          thumb_filename_base: str | None = None) -> Any:
        info_dict["thumbnails"] = self._absolute(
            info_dict.get("thumbnails") or [], info_dict, "thumbnail")
        return super()._write_thumbnails(label, info_dict, filename, thumb_filename_base)

    def _write_subtitles(self, info_dict: dict[str, Any], filename: str) -> Any:
        subtitles = info_dict.get("requested_subtitles") or {}
        kept = self._absolute([{**sub, "_lang": lang} for lang, sub in subtitles.items()],
                              info_dict, "subtitle")
        if subtitles:
            info_dict["requested_subtitles"] = {sub.pop("_lang"): sub for sub in kept}
        return super()._write_subtitles(info_dict, filename)

    def _absolute(self, extras: list[dict[str, Any]], info: dict[str, Any],
                  what: str) -> list[dict[str, Any]]:
        """Thumbnails and subtitles with URLs resolved against the post's page (sites,
        and the generic extractor reading ``og:image``, give relative ones); one that is
        still not an http(s) URL is left out with a warning, never failing the video."""
        base = str(info.get("webpage_url") or info.get("original_url") or "")
        kept = []
        for extra in extras:
            raw = str(extra.get("url") or "")
            try:
                absolute = urljoin(base, raw) if raw else ""
            except ValueError:
                absolute = ""
            if absolute.startswith(("http://", "https://")):
                kept.append({**extra, "url": absolute})
            elif raw or extra.get("data") is None:
                self.report_warning(f"{what} URL {raw!r} of {base or 'the post'} is not "
                                    "an http(s) URL; left out")
            else:
                kept.append(extra)  # subtitles given inline ("data"), nothing to fetch
        return kept

    def dl(self, name: str, info: dict[str, Any], subtitle: bool = False,
           test: bool = False) -> Any:
        downloader = get_suitable_downloader(info, self.params, to_stdout=(name == "-"))
        if downloader not in _RECORDED_DOWNLOADERS:
            raise WouldEscapeRecorder(
                f"format {info.get('format_id')} ({info.get('protocol')}) needs "
                f"{getattr(downloader, '__name__', downloader)}, which opens its own "
                "connections; not downloaded (it would bypass the recorder)"
            )
        return super().dl(name, info, subtitle=subtitle, test=test)

