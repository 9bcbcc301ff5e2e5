"""Watch sources: each turns a watched URL into the list of its posts' URLs.

One module per kind — :mod:`~archiver.sources.feed` (RSS, Atom),
:mod:`~archiver.sources.channel` (yt-dlp flat listing),
:mod:`~archiver.sources.activitypub` (Mastodon and compatible outboxes),
:mod:`~archiver.sources.bluesky` (AppView author feeds),
:mod:`~archiver.sources.telegram` (``t.me/s/`` previews), :mod:`~archiver.sources.page`
(links or changes of any page) — and :mod:`~archiver.sources.detect` for ``auto``.
Every listing fetch goes through :class:`~archiver.sources.fetch.GuardedFetcher` (the
SSRF guard); sources hold no state between polls except what they return in
:attr:`Listing.state`, which the poller stores with the watch.
"""

from __future__ import annotations

from archiver.settings import Settings
from archiver.sources.activitypub import ActivityPubSource
from archiver.sources.base import KINDS, Listing, ListRequest, Post, Source, SourceError
from archiver.sources.bluesky import BlueskySource
from archiver.sources.channel import ChannelSource
from archiver.sources.detect import Detected, detect
from archiver.sources.feed import FeedSource
from archiver.sources.fetch import GuardedFetcher
from archiver.sources.page import PageSource
from archiver.sources.telegram import TelegramSource


def build_sources(settings: Settings, fetcher: GuardedFetcher) -> dict[str, Source]:
    """One source per kind, sharing ``fetcher``."""
    watch = settings.watch
    sources: list[Source] = [
        FeedSource(fetcher),
        ChannelSource(fetcher),
        ActivityPubSource(fetcher),
        BlueskySource(fetcher, appview=watch.bluesky_appview, web=watch.bluesky_web),
        TelegramSource(fetcher),
        PageSource(fetcher),
    ]
    return {source.kind: source for source in sources}


__all__ = [
    "KINDS",
    "Detected",
    "GuardedFetcher",
    "ListRequest",
    "Listing",
    "Post",
    "Source",
    "SourceError",
    "build_sources",
    "detect",
]
