"""ActivityPub outboxes (Mastodon and compatible servers), public JSON only.

The watched URL may be an actor (``https://host/users/NAME``, or a profile URL the server
answers with the actor when asked for ``application/activity+json``) or its outbox. The
outbox is an ``OrderedCollection`` whose ``first`` page (a URL or embedded) holds
``Create`` activities, newest first, each wrapping a ``Note`` (or ``Article``, ``Video``
…); a page's ``next`` is the older page. A post's URL is the object's ``url`` (the page
people see, ``https://host/@NAME/ID``), else its ``id``. Boosts (``Announce``) are
someone else's posts and are not listed.
"""

from __future__ import annotations

import json
from typing import Any

from archiver.watch.sources.base import Listing, ListRequest, Pager, Post, SourceError
from archiver.watch.sources.fetch import GuardedFetcher

ACCEPT = (
    'application/activity+json, application/ld+json; '
    'profile="https://www.w3.org/ns/activitystreams";q=0.9'
)
ACTOR_TYPES = frozenset({"Person", "Service", "Group", "Organization", "Application"})
OBJECT_TYPES = frozenset({"Note", "Article", "Video", "Image", "Audio", "Page", "Question",
                          "Event"})


def _href(value: Any) -> str | None:
    """A URL from an ActivityStreams link value: a string, a Link object, or a list."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return _href(value.get("href") or value.get("id"))
    if isinstance(value, list):
        # Prefer an HTML link (Mastodon lists one per media type in some versions).
        for item in value:
            if isinstance(item, dict) and item.get("mediaType") == "text/html":
                return _href(item)
        for item in value:
            found = _href(item)
            if found:
                return found
    return None


def post_of(item: Any) -> Post | None:
    """The post an outbox item publishes, or None (a boost, a like, something unknown)."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if kind == "Create":
        obj = item.get("object")
    elif kind in OBJECT_TYPES:
        obj = item
    else:
        return None
    if isinstance(obj, str):
        url = obj
    elif isinstance(obj, dict):
        url = _href(obj.get("url")) or _href(obj.get("id")) or ""
    else:
        return None
    if not url.startswith(("http://", "https://")):
        return None
    return Post(url=url, key=url)


class ActivityPubSource:
    kind = "activitypub"

    def __init__(self, fetcher: GuardedFetcher) -> None:
        self.fetcher = fetcher

    def _json(self, url: str) -> dict[str, Any]:
        fetched = self.fetcher.get(url, accept=ACCEPT).require_ok()
        try:
            data = json.loads(fetched.body)
        except ValueError as exc:
            raise SourceError(f"{fetched.url} did not answer ActivityStreams JSON") from exc
        if not isinstance(data, dict):
            raise SourceError(f"{fetched.url} did not answer an ActivityStreams object")
        return data

    def outbox_url(self, url: str) -> str:
        """The outbox of the actor at ``url`` (or ``url`` itself if it is a collection)."""
        doc = self._json(url)
        if doc.get("type") in ACTOR_TYPES:
            outbox = _href(doc.get("outbox"))
            if not outbox:
                raise SourceError(f"the actor at {url} has no outbox")
            return outbox
        return url

    def list_posts(self, request: ListRequest) -> Listing:
        # An actor's outbox URL is kept in the state, saving a fetch per poll.
        outbox = str(request.state.get("outbox") or request.url)
        doc = self._json(outbox)
        if doc.get("type") in ACTOR_TYPES:
            outbox = _href(doc.get("outbox")) or ""
            if not outbox:
                raise SourceError(f"the actor at {request.url} has no outbox")
            doc = self._json(outbox)
        kind = doc.get("type")
        if kind in ("OrderedCollection", "Collection"):
            first = doc.get("first")
            if isinstance(first, dict):
                page: dict[str, Any] | None = first
            elif _href(first):
                page = self._json(str(_href(first)))
            else:
                page = doc  # a small collection with its items inline
        elif kind in ("OrderedCollectionPage", "CollectionPage"):
            page = doc
        else:
            raise SourceError(f"{request.url} is not an ActivityPub actor or outbox "
                              f"(type {kind!r})")
        pager = Pager(request)
        visited: set[str] = set()
        while page is not None:
            items = page.get("orderedItems") or page.get("items") or []
            if not isinstance(items, list):
                raise SourceError(f"{request.url}: an outbox page without a list of items")
            pager.add_page([p for p in (post_of(i) for i in items) if p is not None])
            following = _href(page.get("next"))
            if not pager.more or not following or following in visited:
                break
            visited.add(following)
            page = self._json(following)
        return pager.listing({"outbox": outbox} if outbox != request.url else {})
