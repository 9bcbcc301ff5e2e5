"""The recorder: every HTTP exchange of a capture, recorded into one WARC 1.1 file.

Public surface: :func:`open_session` and :class:`RecordingSession` (one capture's WARC,
shared by every fetcher), :class:`OutgoingRequest`, :class:`Exchange`; the page fetcher
:func:`capture_page` and the one-call :func:`record_capture`; the values
:class:`RecorderOptions`, :class:`RecordingResult`, :class:`PageCapture`,
:class:`ExchangeSummary`, :func:`new_record_id`. See :mod:`archiver.recorder.session`
for how fetchers share a WARC, :mod:`archiver.recorder.wire` for why bytes are taken at
the network backend, :mod:`archiver.recorder.guard` for the SSRF threat model and
:mod:`archiver.recorder.warcfile` for the WARC layout and atomic publish.
"""

from archiver.capture.page import (
    PageCapture,
    RecordingResult,
    capture_page,
    record_capture,
)
from archiver.recorder.model import ExchangeSummary, RecorderOptions, new_record_id
from archiver.recorder.session import Exchange, OutgoingRequest, RecordingSession, open_session

__all__ = [
    "Exchange",
    "ExchangeSummary",
    "OutgoingRequest",
    "PageCapture",
    "RecorderOptions",
    "RecordingResult",
    "RecordingSession",
    "capture_page",
    "new_record_id",
    "open_session",
    "record_capture",
]
