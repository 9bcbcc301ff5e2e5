"""Bluesky author feeds through the public AppView (``app.bsky.feed.getAuthorFeed``).

The watched URL is a profile, ``<bluesky_web>/profile/<handle or DID>``. Each poll asks
``<bluesky_appview>/xrpc/app.bsky.feed.getAuthorFeed?actor=…&limit=…`` and follows the
``cursor`` to older pages. A post's URL is its web page,
``<bluesky_web>/profile/<handle>/post/<record key>``; its key in the seen set is its
``at://`` URI, which survives a change of handle. Reposts (items with a ``reason`` of
``reasonRepost``) are other people's posts and are not listed.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from archiver.watch.sources.base import Listing, ListRequest, Pager, Post, SourceError
from archiver.watch.sources.fetch import GuardedFetcher

METHOD = "app.bsky.feed.getAuthorFeed"
POST_COLLECTION = "app.bsky.feed.post"


def actor_of(url: str) -> str:
    """The handle or DID in a profile URL (``…/profile/<actor>``).

    Raises :class:`SourceError` when the URL names no profile.
    """
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "profile":
        return parts[1]
    raise SourceError(f"{url} is not a Bluesky profile URL (…/profile/<handle>)")


def post_of(item: Any, web: str) -> Post | None:
    """The web URL and ``at://`` key of one feed item, or None for a repost."""
    if not isinstance(item, dict) or not isinstance(item.get("post"), dict):
        return None
    reason = item.get("reason")
    if isinstance(reason, dict) and str(reason.get("$type", "")).endswith("reasonRepost"):
        return None
    post = item["post"]
    uri = post.get("uri")
    if not isinstance(uri, str) or not uri.startswith("at://"):
        return None
    parts = uri[len("at://"):].split("/")
    if len(parts) != 3 or parts[1] != POST_COLLECTION:
        return None
    author = post.get("author") if isinstance(post.get("author"), dict) else {}
    handle = author.get("handle")
    who = handle if isinstance(handle, str) and handle and handle != "handle.invalid" \
        else parts[0]
    url = f"{web.rstrip('/')}/profile/{quote(who, safe=':.')}/post/{quote(parts[2], safe='')}"
    return Post(url=url, key=uri)


class BlueskySource:
    kind = "bluesky"

    def __init__(self, fetcher: GuardedFetcher, *, appview: str, web: str) -> None:
        self.fetcher = fetcher
        self.appview = appview.rstrip("/")
        self.web = web.rstrip("/")

    def list_posts(self, request: ListRequest) -> Listing:
        actor = actor_of(request.url)
        pager = Pager(request)
        cursor: str | None = None
        while True:
            params = {"actor": actor, "limit": str(request.page_size)}
            if cursor:
                params["cursor"] = cursor
            endpoint = f"{self.appview}/xrpc/{METHOD}?{urlencode(params)}"
            fetched = self.fetcher.get(endpoint, accept="application/json").require_ok()
            try:
                data = json.loads(fetched.body)
                feed = data["feed"]
                if not isinstance(feed, list):
                    raise TypeError("feed is not a list")
            except (ValueError, KeyError, TypeError) as exc:
                raise SourceError(f"{endpoint} did not answer an author feed: {exc}") from exc
            pager.add_page([p for p in (post_of(i, self.web) for i in feed) if p is not None])
            following = data.get("cursor")
            if not pager.more or not isinstance(following, str) or not following \
                    or following == cursor:
                break
            cursor = following
        return pager.listing()
