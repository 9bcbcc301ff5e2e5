"""Watch sources: each turns a watched URL into the list of its posts' URLs.

One module per kind — :mod:`~archiver.watch.sources.feed` (RSS, Atom),
:mod:`~archiver.watch.sources.channel` (yt-dlp flat listing),
:mod:`~archiver.watch.sources.activitypub` (Mastodon and compatible outboxes),
:mod:`~archiver.watch.sources.bluesky` (AppView author feeds),
:mod:`~archiver.watch.sources.telegram` (``t.me/s/`` previews), :mod:`~archiver.watch.sources.page`
(links or changes of any page) — and :mod:`~archiver.watch.sources.detect` for ``auto``.
Every listing fetch goes through :class:`~archiver.watch.sources.fetch.GuardedFetcher` (the
SSRF guard); sources hold no state between polls except what they return in
:attr:`Listing.state`, which the poller stores with the watch.
"""

from __future__ import annotations

from archiver.settings import Settings
from archiver.watch.sources.activitypub import ActivityPubSource
from archiver.watch.sources.base import KINDS, Listing, ListRequest, Post, Source, SourceError
from archiver.watch.sources.bluesky import BlueskySource
from archiver.watch.sources.channel import ChannelSource
from archiver.watch.sources.detect import Detected, detect
from archiver.watch.sources.feed import FeedSource
from archiver.watch.sources.fetch import GuardedFetcher
from archiver.watch.sources.page import PageSource
from archiver.watch.sources.telegram import TelegramSource


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
