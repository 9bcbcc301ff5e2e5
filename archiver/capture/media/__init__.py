"""Media capture: a post's videos (yt-dlp) and images, recorded on the wire into the
capture's WARC, sealed as artifacts with perceptual hashes.

Public surface: :class:`MediaFetcher` and :class:`MediaOptions` (the fetcher the
archive runs after the page), :func:`archiver.capture.media.outcomes.classify` (yt-dlp failures
as reason codes) and :mod:`archiver.capture.media.similar` (``archiver similar``). How yt-dlp's
requests reach the recorder is told in :mod:`archiver.capture.media.handler`.
"""

from archiver.capture.media.fetcher import MediaFetcher, MediaOptions

__all__ = ["MediaFetcher", "MediaOptions"]
