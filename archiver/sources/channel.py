"""Channels and playlists that yt-dlp can list (YouTube, Vimeo, TikTok, … and any page
with several ``<video>`` elements, through its generic extractor).

Flat extraction only (``extract_flat="in_playlist"``, ``skip_download``): yt-dlp reads
the listing and returns one entry per video without fetching the videos. A post's URL is
the entry's ``url`` for flat entries (the video's page, e.g. ``…/watch?v=…``), else its
own ``webpage_url``, else its media URL.

Guard: yt-dlp does its own networking, outside :class:`GuardedFetcher`. Before handing a
URL to it we apply the same checks (scheme, and every address the host resolves to), but
yt-dlp then resolves the name again and follows redirects and API calls on its own, so a
hostile DNS answer or redirect could still reach a refused address. Routing yt-dlp's HTTP
through the guard (its ``RequestHandler`` registry) is the way to close that gap.
"""

from __future__ import annotations

import logging
from typing import Any

import yt_dlp

from archiver.sources.base import Listing, ListRequest, Pager, Post, SourceError
from archiver.sources.fetch import GuardedFetcher

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
            with yt_dlp.YoutubeDL(options) as ydl:
                info = ydl.extract_info(request.url, download=False)
        except yt_dlp.utils.DownloadError as exc:
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
