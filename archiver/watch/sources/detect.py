"""``--kind auto``: pick a watch's source kind from its URL, then from what it serves.

By URL: ``t.me``/``telegram.me`` → telegram; a profile on the configured Bluesky web host
→ bluesky; a channel, user or playlist URL of a video platform yt-dlp lists → channel.
Otherwise the URL is fetched (asking for ActivityStreams JSON first, as Mastodon
negotiates) and judged by its content: an actor or outbox → activitypub; an RSS/Atom
document → feed; an HTML page announcing an ActivityStreams or feed alternate → that;
a Telegram preview → telegram; anything else → page.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import feedparser

from archiver.watch.sources.activitypub import ACTOR_TYPES, ActivityPubSource
from archiver.watch.sources.base import SourceError
from archiver.watch.sources.fetch import GuardedFetcher
from archiver.watch.sources.telegram import TELEGRAM_HOSTS, preview_url

_CHANNEL_URLS = (
    re.compile(r"^(www\.|m\.)?youtube\.com$", re.I),
    re.compile(r"^(www\.)?vimeo\.com$", re.I),
    re.compile(r"^(www\.)?dailymotion\.com$", re.I),
    re.compile(r"^(www\.)?tiktok\.com$", re.I),
    re.compile(r"^(www\.)?rumble\.com$", re.I),
    re.compile(r"^(www\.)?twitch\.tv$", re.I),
    re.compile(r"^(www\.)?bitchute\.com$", re.I),
    re.compile(r"^(www\.)?odysee\.com$", re.I),
)
_CHANNEL_PATHS = re.compile(
    r"^/(@[^/]+|channel/|c/|user/|playlist|videos|showcase/|album/|video/?$|[^/]+/videos)",
    re.I,
)
ACCEPT = (
    'application/activity+json, application/ld+json; profile="https://www.w3.org/ns/'
    'activitystreams";q=0.95, application/rss+xml;q=0.9, application/atom+xml;q=0.9, '
    "application/xml;q=0.8, text/html;q=0.7, */*;q=0.5"
)
_FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/rdf+xml")
_AP_TYPES = ("application/activity+json", "application/ld+json")


@dataclass(frozen=True, slots=True)
class Detected:
    kind: str
    source_url: str
    """What the source fetches (an outbox, a feed, ``t.me/s/…``); may differ from the URL."""


class _Alternates(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        rels = (values.get("rel") or "").lower().split()
        if tag == "link" and "alternate" in rels and values.get("href"):
            media = (values.get("type") or "").split(";")[0].strip().lower()
            self.links.append((media, str(values["href"])))


def by_url(url: str, *, bluesky_web: str) -> Detected | None:
    """The kind a URL's shape alone tells, or None."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in TELEGRAM_HOSTS:
        return Detected("telegram", preview_url(url))
    web = urlsplit(bluesky_web)
    if host == (web.hostname or "").lower() and parts.port == web.port \
            and parts.path.startswith("/profile/"):
        return Detected("bluesky", url)
    if any(p.match(host) for p in _CHANNEL_URLS) and (
        _CHANNEL_PATHS.match(parts.path) or "list=" in parts.query
    ):
        return Detected("channel", url)
    return None


def detect(url: str, fetcher: GuardedFetcher, *, bluesky_web: str) -> Detected:
    """Raises :class:`SourceError` when the URL cannot be fetched."""
    known = by_url(url, bluesky_web=bluesky_web)
    if known is not None:
        return known
    fetched = fetcher.get(url, accept=ACCEPT).require_ok()
    kind = fetched.content_type
    if kind in _AP_TYPES or (kind.endswith("json") and fetched.body.lstrip()[:1] == b"{"):
        try:
            doc = json.loads(fetched.body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            if doc.get("type") in ACTOR_TYPES:
                return Detected("activitypub", ActivityPubSource(fetcher).outbox_url(url))
            if doc.get("type") in ("OrderedCollection", "OrderedCollectionPage"):
                return Detected("activitypub", url)
        raise SourceError(f"{url} serves JSON that is not an ActivityPub actor or outbox; "
                          "give --kind")
    text = fetched.text()
    if "html" not in kind or text.lstrip().startswith("<?xml"):
        # feedparser only ever gets bytes: given a URL or a path it would open it itself.
        parsed = feedparser.parse(io.BytesIO(fetched.body))
        if parsed.get("version"):
            return Detected("feed", url)
    if "tgme_widget_message" in text or "tgme_channel" in text:
        return Detected("telegram", url)
    parser = _Alternates()
    parser.feed(text)
    parser.close()
    for media, href in parser.links:
        if media in _AP_TYPES:
            absolute = urljoin(fetched.url, href)
            return Detected("activitypub", ActivityPubSource(fetcher).outbox_url(absolute))
    for media, href in parser.links:
        if media in _FEED_TYPES:
            return Detected("feed", urljoin(fetched.url, href))
    return Detected("page", url)
