"""The recorder: fetch a URL and record every HTTP exchange into one WARC 1.1 file.

Public surface: :func:`record_capture`, :class:`RecorderOptions`, :class:`RecordingResult`,
:class:`ExchangeSummary`, :func:`new_record_id`. See :mod:`archiver.recorder.recorder`
for the layers, :mod:`archiver.recorder.wire` for why bytes are taken at the network
backend, :mod:`archiver.recorder.guard` for the SSRF threat model and
:mod:`archiver.recorder.warcfile` for the WARC layout and atomic publish.
"""

from archiver.recorder.recorder import (
    ExchangeSummary,
    RecorderOptions,
    RecordingResult,
    new_record_id,
    record_capture,
)

__all__ = [
    "ExchangeSummary",
    "RecorderOptions",
    "RecordingResult",
    "new_record_id",
    "record_capture",
]
