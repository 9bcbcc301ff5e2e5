"""Why a media download failed, as one stable reason code: the one place where yt-dlp's
exceptions and messages become reasons.

Reasons (``Outcome.reason`` of the media fetcher; ``removed`` also puts a
``target.gone`` entry on the ledger):

========================  ==========================================================
``removed``               the platform took it down (HTTP 410/451, "video unavailable", …)
``login-required``        private, members-only, age-gated: needs an account (cookies_file)
``geo-blocked``           not available from this machine's country
``not-found``             the media URL answered 404
``too-large``             past ``capture.max_media_bytes`` / ``max_total_bytes``
``decoded-size-limit``    its Content-Encoding decoded past ``capture.max_decoded_bytes``
                          or ``capture.max_decode_ratio`` (a decompression bomb)
``unsupported-encoding``  its Content-Encoding is one the archive does not decode (``br``,
                          a chain such as ``gzip, gzip``; the message names it): recorded
                          as received, not kept
``not-media``             its bytes are no audio, video or image format (whatever the
                          Content-Type or the extractor said)
``budget``                the capture's budget (``capture.max_requests``,
                          ``max_subresources``, ``max_total_bytes``, ``deadline_seconds``)
                          was spent: what was left is counted in the message
``timeout``               ``media.timeout_seconds`` ran out
``unsupported``           no extractor for it, DRM, a live stream, a downloader that would
                          bypass the recorder
``refused``               the SSRF guard refused an address (``capture.allow_private_networks``)
``tls``                   TLS handshake or certificate failure
``network``               DNS, connection, protocol or server (5xx) failure
``error``                 anything else (the message says what)
========================  ==========================================================

Typed causes are looked for first, anywhere in the exception's chain (``__cause__``,
``__context__``, yt-dlp's ``cause`` and ``exc_info``); then the message is matched
against :data:`MESSAGE_RULES`, in order (the first rule that matches wins, so the more
specific rules come first: "Private video. Sign in …" is ``login-required``, not
``removed``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from yt_dlp.networking.exceptions import HTTPError
from yt_dlp.utils import GeoRestrictedError, UnsupportedError

from archiver.capture.media.handler import (
    DecodedTooLarge,
    MediaTooLarge,
    UnsupportedEncoding,
    WouldEscapeRecorder,
)
from archiver.errors import CaptureError

REASONS = (
    "removed", "login-required", "geo-blocked", "not-found", "too-large",
    "decoded-size-limit", "unsupported-encoding", "not-media", "budget", "timeout",
    "unsupported", "refused", "tls", "network", "redirects", "error",
)

_HTTP_STATUS_REASONS = {404: "not-found", 410: "removed", 451: "removed", 401: "login-required"}

MESSAGE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE))
    for reason, pattern in (
        ("decoded-size-limit", r"max_decoded_bytes|max_decode_ratio"),
        ("unsupported-encoding", r"\(unsupported-encoding\)"),
        ("too-large", r"max[-_ ]filesize|max_media_bytes|media byte limit"),
        ("geo-blocked", r"not available (?:in|from) your (?:country|location|region)"
                        r"|geo[- ]?restrict|blocked (?:in|from) your country"
                        r"|not made this video available in your country"),
        ("login-required", r"sign in|log ?in\b|login|logged[- ]in|--cookies|authenticat"
                           r"|private (?:video|post|account)|video is private"
                           r"|members[- ]only|age[- ]restricted|confirm your age"),
        ("removed", r"http error 410|http error 451|removed|deleted|no longer available"
                    r"|been terminated|taken down|copyright|violat|video (?:is )?unavailable"
                    r"|content (?:is )?(?:not|no longer) available|account.*suspended"),
        ("not-found", r"http error 404|\b404\b|not found"),
        ("timeout", r"timed? ?out|time limit"),
        ("unsupported", r"unsupported url|no video formats|drm|live stream"
                        r"|would bypass the recorder|unable to extract"
                        # ffmpeg's own downloader, held to local files (handler.py)
                        r"|ffmpeg exited with code"),
        ("network", r"http error 5\d\d|connection|network|name resolution|resolve"
                    r"|unable to download|incomplete|reset by peer"),
    )
)


def classify(message: str, error: BaseException | None = None) -> str:
    """The reason code for a failure reported as ``message`` with ``error`` behind it."""
    if error is not None:
        for exc in _chain(error):
            typed = _typed_reason(exc)
            if typed is not None:
                return typed
    for reason, pattern in MESSAGE_RULES:
        if pattern.search(message):
            return reason
    return "error"


def _typed_reason(exc: BaseException) -> str | None:
    if isinstance(exc, MediaTooLarge):
        return "too-large"
    if isinstance(exc, DecodedTooLarge):
        return "decoded-size-limit"
    if isinstance(exc, UnsupportedEncoding):
        return "unsupported-encoding"
    if isinstance(exc, CaptureError):
        return exc.reason
    if isinstance(exc, GeoRestrictedError):
        return "geo-blocked"
    if isinstance(exc, HTTPError):
        status = int(exc.status)
        if status in _HTTP_STATUS_REASONS:
            return _HTTP_STATUS_REASONS[status]
        return "network" if status >= 500 else None
    if isinstance(exc, UnsupportedError | WouldEscapeRecorder):
        return "unsupported"
    return None


def is_nothing_found(error: BaseException | None) -> bool:
    """yt-dlp's generic extractor found no video on a page: not a failure, just none."""
    return error is not None and any(isinstance(e, UnsupportedError) for e in _chain(error))


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        exc = stack.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        yield exc
        linked: list[object] = [exc.__cause__, exc.__context__, getattr(exc, "cause", None)]
        exc_info = getattr(exc, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) == 3:
            linked.append(exc_info[1])
        stack.extend(e for e in reversed(linked) if isinstance(e, BaseException))
