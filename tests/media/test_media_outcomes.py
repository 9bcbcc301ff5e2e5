"""The one table that turns yt-dlp's failures into reason codes: typed causes first,
then message rules, in order."""

from __future__ import annotations

import io

import pytest
from yt_dlp.networking.common import Response
from yt_dlp.networking.exceptions import HTTPError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError, UnsupportedError

from archiver.capture.media.handler import MediaTooLarge, RecorderRefused, WouldEscapeRecorder
from archiver.capture.media.outcomes import REASONS, classify, is_nothing_found
from archiver.errors import FetchRefused, FetchTimeout


def _http_error(status: int) -> HTTPError:
    return HTTPError(Response(io.BytesIO(b""), "http://127.0.0.1/x", {}, status=status))


def _wrapped(cause: BaseException) -> DownloadError:
    """As yt-dlp reports it: DownloadError(exc_info) around ExtractorError(cause)."""
    try:
        raise ExtractorError("extraction failed", cause=cause) from cause
    except ExtractorError as exc:
        return DownloadError("ERROR: extraction failed", (type(exc), exc, None))


@pytest.mark.parametrize(("error", "reason"), [
    (_http_error(410), "removed"),
    (_http_error(451), "removed"),
    (_http_error(404), "not-found"),
    (_http_error(401), "login-required"),
    (_http_error(503), "network"),
    (GeoRestrictedError("no"), "geo-blocked"),
    (UnsupportedError("http://127.0.0.1/x"), "unsupported"),
    (MediaTooLarge("big"), "too-large"),
    (WouldEscapeRecorder("rtmp"), "unsupported"),
    (RecorderRefused("refused", cause=FetchRefused("127.0.0.1 refused")), "refused"),
    (FetchTimeout("late"), "timeout"),
])
def test_typed_causes_deep_in_the_chain_name_the_reason(error: BaseException,
                                                        reason: str) -> None:
    """A typed cause is found through DownloadError.exc_info and ExtractorError.cause."""
    assert classify("ERROR: something", _wrapped(error)) == reason


@pytest.mark.parametrize(("message", "reason"), [
    ("ERROR: [youtube] x: Video unavailable. This video is not available in your country",
     "geo-blocked"),
    ("ERROR: [youtube] x: Private video. Sign in if you've been granted access", "login-required"),
    ("ERROR: [instagram] x: This content is only available for logged-in users",
     "login-required"),
    ("ERROR: [youtube] x: Sign in to confirm your age", "login-required"),
    ("ERROR: [youtube] x: This video is unavailable", "removed"),
    ("ERROR: [youtube] x: This video has been removed for violating YouTube's policy",
     "removed"),
    ("ERROR: [twitter] x: Account suspended", "removed"),
    ("ERROR: unable to download video data: HTTP Error 404: Not Found", "not-found"),
    ("ERROR: Unable to download webpage: HTTP Error 410: Gone", "removed"),
    ("ERROR: File is larger than max-filesize", "too-large"),
    ("ERROR: Read timed out", "timeout"),
    ("ERROR: Unsupported URL: http://127.0.0.1/x", "unsupported"),
    ("ERROR: This format is DRM protected", "unsupported"),
    ("ERROR: ffmpeg exited with code 1", "unsupported"),
    ("ERROR: Unable to download webpage: HTTP Error 502: Bad Gateway", "network"),
    ("ERROR: something nobody expected", "error"),
])
def test_messages_without_a_typed_cause_are_matched_in_order(message: str, reason: str) -> None:
    """Message rules: geo before login before removed ("Video unavailable. … country")."""
    assert classify(message) == reason


def test_every_reason_is_a_known_code() -> None:
    """classify only ever answers codes listed in REASONS."""
    assert {classify(m) for m in ("x", "http error 404", "timed out")} <= set(REASONS)


def test_generic_extractor_finding_nothing_is_not_a_failure() -> None:
    """UnsupportedError behind a DownloadError means: no video on this page."""
    assert is_nothing_found(_wrapped(UnsupportedError("http://127.0.0.1/x"))) is True
    assert is_nothing_found(_wrapped(_http_error(404))) is False
    assert is_nothing_found(None) is False
