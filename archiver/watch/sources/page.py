"""Any other page: its new links (matching an optional pattern), or a change of content.

* With a ``pattern`` (a regular expression searched in each absolute link URL), every
  ``<a href>`` of the page that matches is a post, in document order.
* Without one, the page itself is the post, captured again whenever its visible text
  changes. The fingerprint is the SHA-256 of the text outside scripts and styles, with
  whitespace collapsed, so a rotating CSRF token or a timestamp in a script does not
  count as a change; one in the visible text does.
"""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin

from archiver.watch.sources.base import Listing, ListRequest, Post, SourceError
from archiver.watch.sources.fetch import GuardedFetcher

_INVISIBLE = frozenset({"script", "style", "noscript", "template", "head"})
_SPACE = re.compile(r"\s+")


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.text: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _INVISIBLE:
            self._hidden += 1
        if tag in ("a", "area"):
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)

    def handle_endtag(self, tag: str) -> None:
        if tag in _INVISIBLE and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.text.append(data)


def page_links(html: str, base: str, pattern: str | None) -> list[str]:
    """Absolute http(s) links of the page, without fragments, first occurrence first."""
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    matcher = re.compile(pattern) if pattern else None
    found: dict[str, None] = {}
    for href in parser.links:
        url = urldefrag(urljoin(base, href.strip())).url
        if not url.startswith(("http://", "https://")):
            continue
        if matcher is None or matcher.search(url):
            found.setdefault(url)
    return list(found)


def text_fingerprint(html: str) -> str:
    parser = _PageParser()
    parser.feed(html)
    parser.close()
    text = _SPACE.sub(" ", " ".join(parser.text)).strip()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PageSource:
    kind = "page"

    def __init__(self, fetcher: GuardedFetcher) -> None:
        self.fetcher = fetcher

    def list_posts(self, request: ListRequest) -> Listing:
        fetched = self.fetcher.get(request.url, accept="text/html,*/*;q=0.8").require_ok()
        html = fetched.text()
        if request.pattern:
            try:
                links = page_links(html, fetched.url, request.pattern)
            except re.error as exc:
                raise SourceError(f"bad link pattern {request.pattern!r}: {exc}") from exc
            return Listing(tuple(Post(url=u, key=u) for u in links))
        fingerprint = text_fingerprint(html)
        post = Post(url=request.url, key=f"content:{fingerprint}")
        return Listing((post,), {"fingerprint": fingerprint})
