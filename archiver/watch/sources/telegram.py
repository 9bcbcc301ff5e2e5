"""Public Telegram channels through their web preview, ``https://t.me/s/<channel>``.

The preview page lists the newest messages (oldest first on the page), each a
``<div class="tgme_widget_message …" data-post="<channel>/<id>">``; ``?before=<id>``
gives the older ones. A post's URL is ``<scheme>://<host>/<channel>/<id>`` on the
preview's host (``https://t.me/<channel>/<id>`` for t.me), newest first.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlencode, urlsplit, urlunsplit

from archiver.watch.sources.base import Listing, ListRequest, Pager, Post, SourceError
from archiver.watch.sources.fetch import GuardedFetcher

TELEGRAM_HOSTS = frozenset({"t.me", "telegram.me", "www.t.me", "www.telegram.me"})
_DATA_POST = re.compile(r"^[A-Za-z0-9_]{1,64}/(\d{1,12})$")


def preview_url(url: str) -> str:
    """``https://t.me/NAME`` (or ``…/NAME/123``) → ``https://t.me/s/NAME``; a preview URL
    is returned unchanged. Raises :class:`SourceError` when no channel is named."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if path and path[0] == "s":
        path = path[1:]
    if not path:
        raise SourceError(f"{url} names no Telegram channel")
    return urlunsplit((parts.scheme or "https", parts.netloc, f"/s/{path[0]}", "", ""))


class _MessageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.posts: list[tuple[int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = (values.get("class") or "").split()
        data_post = values.get("data-post")
        if "tgme_widget_message" in classes and data_post:
            match = _DATA_POST.match(data_post)
            if match:
                self.posts.append((int(match.group(1)), data_post))


def parse_preview(html: str, page_url: str) -> list[tuple[int, Post]]:
    """(message id, post) for every message on a preview page, newest first."""
    parser = _MessageParser()
    parser.feed(html)
    parser.close()
    parts = urlsplit(page_url)
    found: dict[int, Post] = {}
    for ident, data_post in parser.posts:
        url = urlunsplit((parts.scheme, parts.netloc, f"/{data_post}", "", ""))
        found.setdefault(ident, Post(url=url, key=url))
    return sorted(found.items(), key=lambda pair: pair[0], reverse=True)


class TelegramSource:
    kind = "telegram"

    def __init__(self, fetcher: GuardedFetcher) -> None:
        self.fetcher = fetcher

    def list_posts(self, request: ListRequest) -> Listing:
        base = preview_url(request.url)
        pager = Pager(request)
        url = base
        while True:
            fetched = self.fetcher.get(url, accept="text/html").require_ok()
            text = fetched.text()
            if "tgme_" not in text and pager.pages == 0:
                raise SourceError(f"{fetched.url} is not a public Telegram channel preview")
            messages = parse_preview(text, base)
            pager.add_page([post for _, post in messages])
            if not pager.more or not messages:
                break
            parts = urlsplit(base)
            url = urlunsplit((parts.scheme, parts.netloc, parts.path,
                              urlencode({"before": messages[-1][0]}), ""))
        return pager.listing()
