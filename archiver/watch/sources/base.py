"""What every source kind shares: the request, the listing, the error, the paging rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from archiver.errors import ArchiverError

KINDS = ("feed", "channel", "activitypub", "bluesky", "telegram", "page")
"""Every source kind; ``auto`` (detection) picks one of these when a watch is added."""


class SourceError(ArchiverError):
    """A watched source could not be listed: unreachable, refused, not what it claims to
    be. The message names the URL; a poll that raises it is recorded as failed."""


@dataclass(frozen=True, slots=True)
class Post:
    """One post a source lists: the URL to capture, and the key that identifies it in the
    watch's seen set (the URL itself, or a stabler id such as an ``at://`` URI)."""

    url: str
    key: str


@dataclass(frozen=True, slots=True)
class Listing:
    """A poll's result: posts newest first, and the state to keep for the next poll."""

    posts: tuple[Post, ...]
    state: Mapping[str, Any] = field(default_factory=dict)
    pages: int = 1
    not_modified: bool = False


KnownKeys = Callable[[Sequence[str]], set[str]]
"""Which of these post keys the watch has seen already (to stop paging back)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ListRequest:
    url: str
    """The source URL (a feed, an outbox, an author-feed profile, a preview page, …)."""
    state: Mapping[str, Any]
    """What the previous poll kept (ETag, Last-Modified, page fingerprint)."""
    want: int | None
    """Stop paging once this many posts are listed (the first poll's back-fill), or None."""
    max_pages: int
    page_size: int
    known: KnownKeys
    pattern: str | None = None


class Source(Protocol):
    """Turns a watched URL into the list of its posts' URLs."""

    kind: str

    def list_posts(self, request: ListRequest) -> Listing:
        """Raises :class:`SourceError`."""
        ...


class Pager:
    """The paging rule shared by paginated sources.

    Keep reading older pages while every post on the newest pages is unseen (the gap
    since the last poll may go further back), until ``want`` posts are listed or
    ``max_pages`` pages were read. Posts are de-duplicated by key, first seen wins.
    """

    def __init__(self, request: ListRequest) -> None:
        self.request = request
        self.posts: list[Post] = []
        self.pages = 0
        self._keys: set[str] = set()
        self._reached_known = False

    def add_page(self, posts: Sequence[Post]) -> None:
        self.pages += 1
        fresh = [p for p in posts if p.key not in self._keys]
        for post in fresh:
            self._keys.add(post.key)
        self.posts.extend(fresh)
        if fresh and self.request.known([p.key for p in fresh]):
            self._reached_known = True
        if not posts:
            self._reached_known = True

    @property
    def more(self) -> bool:
        """Whether another (older) page should be read."""
        if self._reached_known or self.pages >= self.request.max_pages:
            return False
        return self.request.want is None or len(self.posts) < self.request.want

    def listing(self, state: Mapping[str, Any] | None = None) -> Listing:
        return Listing(tuple(self.posts), dict(state or {}), pages=self.pages)
