"""RSS and Atom feeds (``feedparser``), with conditional GET and RFC 5005 paging.

The feed is fetched by our guarded fetcher and handed to feedparser as a stream:
feedparser fetches by itself when given a URL (or opens a file when given a path), which
would bypass the guard, so it only ever sees bytes.
"""

from __future__ import annotations

import io
from typing import Any

import feedparser

from archiver.watch.sources.base import Listing, ListRequest, Pager, Post, SourceError
from archiver.watch.sources.fetch import Fetched, GuardedFetcher

ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, */*;q=0.5"
)


def parse_feed(fetched: Fetched) -> tuple[list[Post], str | None]:
    """The posts of one feed document (newest first when every entry is dated, else in
    document order) and the URL of its next (older) page, if any.

    Raises :class:`SourceError` when the document is not a feed.
    """
    parsed: Any = feedparser.parse(
        io.BytesIO(fetched.body),
        response_headers={"content-location": fetched.url,
                          "content-type": fetched.headers.get("content-type", "")},
        sanitize_html=False,
    )
    if not parsed.get("version") and not parsed.entries:
        problem = parsed.get("bozo_exception")
        raise SourceError(f"{fetched.url} is not an RSS or Atom feed"
                          + (f" ({problem})" if problem else ""))
    entries = list(parsed.entries)
    dates = [e.get("published_parsed") or e.get("updated_parsed") for e in entries]
    if entries and all(dates):
        order = sorted(range(len(entries)), key=lambda i: tuple(dates[i]), reverse=True)
        entries = [entries[i] for i in order]
    posts = []
    for entry in entries:
        url = entry.get("link") or ""
        if not url.startswith(("http://", "https://")):
            ident = entry.get("id") or ""
            url = ident if ident.startswith(("http://", "https://")) else ""
        if url:
            posts.append(Post(url=url, key=url))
    next_url = None
    for link in parsed.feed.get("links", []):
        if link.get("rel") == "next" and link.get("href"):
            next_url = str(link["href"])
    return posts, next_url


class FeedSource:
    kind = "feed"

    def __init__(self, fetcher: GuardedFetcher) -> None:
        self.fetcher = fetcher

    def list_posts(self, request: ListRequest) -> Listing:
        headers = {}
        if request.state.get("etag"):
            headers["If-None-Match"] = str(request.state["etag"])
        if request.state.get("last_modified"):
            headers["If-Modified-Since"] = str(request.state["last_modified"])
        first = self.fetcher.get(request.url, accept=ACCEPT, headers=headers)
        if first.status == 304:
            return Listing((), dict(request.state), pages=1, not_modified=True)
        first.require_ok()
        state = {
            key: value for key, value in (
                ("etag", first.headers.get("etag")),
                ("last_modified", first.headers.get("last-modified")),
            ) if value
        }
        pager = Pager(request)
        posts, next_url = parse_feed(first)
        pager.add_page(posts)
        seen_pages = {first.url}
        while pager.more and next_url and next_url not in seen_pages:
            page = self.fetcher.get(next_url, accept=ACCEPT).require_ok()
            seen_pages.add(next_url)
            posts, next_url = parse_feed(page)
            pager.add_page(posts)
        return pager.listing(state)
