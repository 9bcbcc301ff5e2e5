"""The recorder: every HTTP exchange of a capture, recorded into one WARC 1.1 file.

Public surface: :func:`open_session` and :class:`RecordingSession` (one capture's WARC,
shared by every fetcher), :class:`OutgoingRequest`, :class:`Exchange`; the values
:class:`RecorderOptions`, :class:`ExchangeSummary`, :func:`new_record_id`. See
:mod:`archiver.recorder.session` for how fetchers share a WARC,
:mod:`archiver.recorder.wire` for why bytes are taken at the network backend,
:mod:`archiver.recorder.transport` for the guarded transport every HTTP client of the
archive uses, :mod:`archiver.recorder.guard` for the SSRF threat model and
:mod:`archiver.recorder.warcfile` for the WARC layout and atomic publish. The page
fetcher that drives a session for one URL is :mod:`archiver.capture.page`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from archiver.recorder.model import ExchangeSummary, RecorderOptions, new_record_id
    from archiver.recorder.session import (
        Exchange,
        OutgoingRequest,
        RecordingSession,
        open_session,
    )

# Loaded on first use: the package's pure parts (archiver.recorder.addresses, .model)
# must be importable without httpx, which the reading commands never need.
_WHERE = {
    "ExchangeSummary": "model", "RecorderOptions": "model", "new_record_id": "model",
    "Exchange": "session", "OutgoingRequest": "session", "RecordingSession": "session",
    "open_session": "session",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)

__all__ = [
    "Exchange",
    "ExchangeSummary",
    "OutgoingRequest",
    "RecorderOptions",
    "RecordingSession",
    "new_record_id",
    "open_session",
]
