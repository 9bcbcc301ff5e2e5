"""Channels and playlists that yt-dlp can list (YouTube, Vimeo, TikTok, … and any page
with several ``<video>`` elements, through its generic extractor).

Flat extraction only (``extract_flat="in_playlist"``, ``skip_download``): yt-dlp reads
the listing and returns one entry per video without fetching the videos. A post's URL is
the entry's ``url`` for flat entries (the video's page, e.g. ``…/watch?v=…``), else its
own ``webpage_url``, else its media URL.

Guard: yt-dlp would do its own networking, resolving names again and following
redirects and API calls on its own, where a hostile DNS answer or redirect could reach a
refused address. So it lists through the media fetcher's :class:`RecordingYoutubeDL`,
whose only request handler is a recording session's: every request yt-dlp makes is an
exchange that passes the SSRF guard at connect time, exactly as in a capture. The
session's WARC is a scratch file, never published: a poll is not evidence, the captures
of the posts it finds are.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import yt_dlp

from archiver.capture.media.handler import MediaTraffic, RecordingYoutubeDL
from archiver.recorder import RecorderOptions, open_session
from archiver.recorder.addresses import non_global_reason
from archiver.recorder.wire import Deadline
from archiver.watch.sources.base import Listing, ListRequest, Pager, Post, SourceError
from archiver.watch.sources.fetch import GuardedFetcher

log = logging.getLogger(__name__)


class _YtdlpLogger:
    """yt-dlp's messages go to our log (debug), never to stdout."""

    def debug(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def info(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def warning(self, message: str) -> None:
        log.debug("yt-dlp warning: %s", message)

    def error(self, message: str) -> None:
        log.debug("yt-dlp error: %s", message)


def entry_url(entry: Any, playlist_page: str | None) -> str | None:
    """The URL to capture for one flat-extracted entry (see the module docstring)."""
    if not isinstance(entry, dict):
        return None
    candidates = []
    if entry.get("_type") in ("url", "url_transparent"):
        candidates.append(entry.get("url"))
    page = entry.get("webpage_url")
    if page and page != playlist_page:
        candidates.append(page)
    candidates.append(entry.get("url"))
    for url in candidates:
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return url
    return None


class ChannelSource:
    kind = "channel"

    def __init__(self, fetcher: GuardedFetcher) -> None:
        self.fetcher = fetcher

    def _extract(self, url: str, params: dict[str, Any]) -> Any:
        """yt-dlp's ``extract_info``, every request of it through a guarded session."""
        f = self.fetcher
        options = RecorderOptions(
            allow_private_networks=f.allow_private_networks,
            timeout_seconds=f.timeout_seconds,
            max_redirects=f.max_redirects,
            max_response_bytes=f.max_bytes,
            max_media_bytes=f.max_bytes,
            max_subresource_bytes=f.max_bytes,
            max_total_bytes=16 * f.max_bytes,
            fetch_subresources=False,
            verify_tls=f.verify_tls,
            ca_bundle=f.ca_bundle,
            user_agent=f.user_agent,
        )
        with tempfile.TemporaryDirectory(prefix="archiver-channel-poll-") as scratch:
            work = Path(scratch)
            with open_session(
                work / "poll.warc.gz", options=options,
                warcinfo={"purpose": "channel poll (scratch, never published)"},
                address_policy=f.policy or non_global_reason,
            ) as session:
                traffic = MediaTraffic(session, deadline=Deadline(f.timeout_seconds),
                                       workdir=work)
                try:
                    with RecordingYoutubeDL(params, traffic=traffic) as ydl:
                        return ydl.extract_info(url, download=False)
                finally:
                    traffic.close()

    def list_posts(self, request: ListRequest) -> Listing:
        self.fetcher.check(request.url)
        limit = request.want if request.want is not None else request.page_size * \
            request.max_pages
        options = {
            "extract_flat": "in_playlist",
            "skip_download": True,
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "playlistend": max(1, limit),
            "socket_timeout": self.fetcher.timeout_seconds,
            "cachedir": False,
            "logger": _YtdlpLogger(),
            "http_headers": {"User-Agent": self.fetcher.user_agent},
        }
        try:
            info = self._extract(request.url, options)
        except (yt_dlp.utils.YoutubeDLError, yt_dlp.networking.exceptions.RequestError) as exc:
            # DownloadError, or a request our session refused (the guard) raised as is
            raise SourceError(f"yt-dlp cannot list {request.url}: {exc}") from exc
        if not isinstance(info, dict):
            raise SourceError(f"yt-dlp found nothing at {request.url}")
        entries = info.get("entries")
        if entries is None:
            raise SourceError(f"{request.url} is a single video, not a channel or playlist; "
                              "watch it as a page")
        playlist_page = info.get("webpage_url")
        pager = Pager(request)
        posts = []
        for entry in list(entries)[:limit]:
            url = entry_url(entry, playlist_page)
            if url is not None:
                posts.append(Post(url=url, key=url))
        pager.add_page(posts)
        return pager.listing()
