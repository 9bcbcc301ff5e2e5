"""Fixtures of the daemon tests: a site whose sources gain posts, archives, the daemon.

``watched_site`` serves, on 127.0.0.1 port 0, the real formats each source reads, and
grows when a test calls :meth:`WatchedSite.publish`:

    /feeds/rss.xml              RSS 2.0 (ETag; 304 on If-None-Match)
    /feeds/atom.xml             Atom 1.0
    /users/alice                ActivityPub actor (application/activity+json), else HTML
    /users/alice/outbox         OrderedCollection → ?page=true[&max_id=N] pages of 2 items:
                                Create{Note{id, url=/@alice/N}} and one Announce (a boost)
    /xrpc/app.bsky.feed.getAuthorFeed?actor=alice.test&limit=&cursor=
                                author feed, newest first, cursor paging, one repost
    /s/evidence_chan[?before=N] Telegram preview: 3 messages a page, oldest first
    /links.html                 links /articles/N (and /about, which matches no pattern)
    /channel.html               one <video src=/videos/N.mp4> per video (yt-dlp generic)
    /changing.html              a page whose text changes with change_page()
    /hop/N                      302 to /hop/N+1, forever
    /to-other-address           302 to the same site on 127.0.0.2

Post pages (``/posts/rss-N``, ``/posts/atom-N``, ``/@alice/N``,
``/profile/alice.test/post/3kN``, ``/evidence_chan/N``, ``/articles/N``,
``/videos/N.mp4``) answer 200 until :meth:`WatchedSite.take_down` makes them answer
404, 410, or a 200 "removed by the platform" page. ``/slow/N`` holds its answer until
:attr:`WatchedSite.gate` is set (a capture stays in flight meanwhile).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import archive_cli
import pytest
from archive_cli import Cli, archive_environment
from daemon_process import Daemon, wait_until  # noqa: F401 - the daemon tests import both from here
from fixture_site import FixtureSite

from archiver.settings import Settings

# Test modules import the helpers below as ``daemon_fixtures`` (test directories are not
# packages, and with --import-mode=importlib a conftest is not importable by name).
sys.modules.setdefault("daemon_fixtures", sys.modules[__name__])

PASSPHRASE = archive_cli.PASSPHRASE
KINDS = ("rss", "atom", "ap", "bsky", "tg", "links", "video")
REMOVAL_TEXT = "This post was removed by the platform"
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class WatchedSite:
    """The site's state; every handler reads it under ``lock``."""

    base: str = ""
    clip: bytes = b""
    posts: dict[str, list[int]] = field(default_factory=lambda: {k: [] for k in KINDS})
    gone: dict[str, str] = field(default_factory=dict)
    page_version: int = 1
    gate: threading.Event = field(default_factory=threading.Event)
    hits: dict[str, int] = field(default_factory=dict)
    conditional_hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path

    def publish(self, kind: str, count: int = 1) -> list[str]:
        """Add ``count`` posts to a source; returns their URLs."""
        with self.lock:
            made = []
            for _ in range(count):
                number = len(self.posts[kind]) + 1
                self.posts[kind].append(number)
                made.append(self.post_url(kind, number))
            return made

    def publish_everywhere(self, count: int = 1) -> list[str]:
        return [url for kind in KINDS for url in self.publish(kind, count)]

    def post_url(self, kind: str, number: int) -> str:
        return self.base + {
            "rss": f"/posts/rss-{number}",
            "atom": f"/posts/atom-{number}",
            "ap": f"/@alice/{number}",
            "bsky": f"/profile/alice.test/post/3k{number:04d}",
            "tg": f"/evidence_chan/{number}",
            "links": f"/articles/{number}",
            "video": f"/videos/{number}.mp4",
        }[kind]

    def all_post_urls(self) -> set[str]:
        with self.lock:
            return {self.post_url(k, n) for k, numbers in self.posts.items() for n in numbers}

    def take_down(self, url: str, how: str) -> None:
        """``how``: "404", "410" or "removal" (a 200 page saying the post was removed)."""
        with self.lock:
            self.gone[urlsplit(url).path] = how

    def change_page(self) -> None:
        with self.lock:
            self.page_version += 1

    def hit_count(self, path: str) -> int:
        with self.lock:
            return self.hits.get(path, 0)


def _stamp(number: int) -> datetime:
    return BASE_TIME + timedelta(minutes=number)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        site = self.server.site
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        with site.lock:
            site.hits[parts.path] = site.hits.get(parts.path, 0) + 1
        if parts.path.startswith("/slow/"):
            site.gate.wait(60)
            self._send(200, "text/html", b"<h1>a slow post</h1>")
            return
        with site.lock:
            answer = self._route(site, parts.path, query)
        if answer is None:
            self._send(404, "text/plain", b"no such page\n")
            return
        status, media_type, body, headers = answer
        etag = headers.get("ETag")
        if etag and self.headers.get("If-None-Match") == etag:
            with site.lock:
                site.conditional_hits += 1
            self._send(304, media_type, b"", headers)
            return
        self._send(status, media_type, body, headers)

    def _send(self, status: int, media_type: str, body: bytes,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _route(self, site: WatchedSite, path: str, query: dict[str, str]
               ) -> tuple[int, str, bytes, dict[str, str]] | None:
        b = site.base
        if path in site.gone:
            how = site.gone[path]
            if how == "removal":
                return 200, "text/html", f"<p>{REMOVAL_TEXT}.</p>".encode(), {}
            return int(how), "text/html", b"<h1>This post is unavailable</h1>", {}
        if path.startswith("/hop/"):
            return 302, "text/html", b"", {"Location": f"/hop/{int(path[5:]) + 1}"}
        if path == "/to-other-address":
            port = b.rsplit(":", 1)[1]
            return 302, "text/html", b"", {
                "Location": f"http://127.0.0.2:{port}/feeds/rss.xml"}
        if path == "/feeds/rss.xml":
            items = "".join(
                f"<item><title>Post {n}</title><link>{b}/posts/rss-{n}</link>"
                f"<guid>{b}/posts/rss-{n}</guid>"
                f"<pubDate>{email.utils.format_datetime(_stamp(n))}</pubDate></item>"
                for n in reversed(site.posts["rss"]))
            body = (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
                    f"<title>Watched feed</title><link>{b}/</link><description>d</description>"
                    f"{items}</channel></rss>").encode()
            return 200, "application/rss+xml", body, {"ETag": _etag(body)}
        if path == "/feeds/atom.xml":
            entries = "".join(
                f'<entry><title>Post {n}</title><link rel="alternate" '
                f'href="{b}/posts/atom-{n}"/><id>tag:example.org,2026:atom-{n}</id>'
                f"<updated>{_stamp(n).isoformat()}</updated></entry>"
                for n in reversed(site.posts["atom"]))
            body = (f'<?xml version="1.0" encoding="utf-8"?>'
                    f'<feed xmlns="http://www.w3.org/2005/Atom"><title>Watched atom</title>'
                    f"<id>tag:example.org,2026:feed</id><updated>{BASE_TIME.isoformat()}"
                    f"</updated>{entries}</feed>").encode()
            return 200, "application/atom+xml", body, {}
        if path == "/users/alice":
            if "activity+json" in self.headers.get("Accept", ""):
                actor = {"@context": "https://www.w3.org/ns/activitystreams",
                         "id": f"{b}/users/alice", "type": "Person",
                         "preferredUsername": "alice", "outbox": f"{b}/users/alice/outbox"}
                return 200, "application/activity+json", json.dumps(actor).encode(), {}
            html = (f'<html><head><link rel="alternate" type="application/activity+json" '
                    f'href="{b}/users/alice"></head><body>alice</body></html>')
            return 200, "text/html", html.encode(), {}
        if path == "/users/alice/outbox":
            return 200, "application/activity+json", _outbox(site, query), {}
        if path == "/xrpc/app.bsky.feed.getAuthorFeed":
            if query.get("actor") != "alice.test":
                return 400, "application/json", b'{"error":"InvalidRequest"}', {}
            return 200, "application/json", _author_feed(site, query), {}
        if path == "/s/evidence_chan":
            return 200, "text/html", _telegram(site, query), {}
        if path == "/links.html":
            links = "".join(f'<li><a href="/articles/{n}#top">Article {n}</a></li>'
                            for n in reversed(site.posts["links"]))
            html = f'<html><body><a href="/about">About</a><ul>{links}</ul></body></html>'
            return 200, "text/html", html.encode(), {}
        if path == "/channel.html":
            videos = "".join(f'<video src="/videos/{n}.mp4" controls></video>'
                             for n in reversed(site.posts["video"]))
            html = f"<html><head><title>A channel</title></head><body>{videos}</body></html>"
            return 200, "text/html", html.encode(), {}
        if path == "/changing.html":
            html = (f"<html><head><script>var token = '{time.time()}';</script></head>"
                    f"<body><p>Statement, version {site.page_version}</p></body></html>")
            return 200, "text/html", html.encode(), {}
        return self._post(site, path)

    def _post(self, site: WatchedSite, path: str) -> tuple[int, str, bytes, dict[str, str]] | None:
        for kind, numbers in site.posts.items():
            for number in numbers:
                if site.post_url(kind, number) == site.base + path:
                    if kind == "video":
                        return 200, "video/mp4", site.clip, {}
                    body = f"<html><body><h1>{kind} post {number}</h1></body></html>"
                    return 200, "text/html", body.encode(), {}
        return None


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def _outbox(site: WatchedSite, query: dict[str, str]) -> bytes:
    b = site.base
    outbox = f"{b}/users/alice/outbox"
    numbers = sorted(site.posts["ap"], reverse=True)
    if query.get("page") != "true":
        doc: dict[str, Any] = {"@context": "https://www.w3.org/ns/activitystreams",
                               "id": outbox, "type": "OrderedCollection",
                               "totalItems": len(numbers), "first": f"{outbox}?page=true"}
        return json.dumps(doc).encode()
    if "max_id" in query:
        numbers = [n for n in numbers if n < int(query["max_id"])]
    page, rest = numbers[:2], numbers[2:]
    items: list[dict[str, Any]] = [{
        "id": f"{b}/users/alice/statuses/{n}/activity", "type": "Create",
        "actor": f"{b}/users/alice", "published": _stamp(n).isoformat(),
        "object": {"id": f"{b}/users/alice/statuses/{n}", "type": "Note",
                   "url": f"{b}/@alice/{n}", "content": f"<p>post {n}</p>"},
    } for n in page]
    items.append({"id": f"{b}/users/alice/statuses/boost/activity", "type": "Announce",
                  "object": "https://elsewhere.example/users/bob/statuses/1"})
    doc = {"@context": "https://www.w3.org/ns/activitystreams",
           "id": f"{outbox}?page=true", "type": "OrderedCollectionPage",
           "partOf": outbox, "orderedItems": items}
    if rest:
        doc["next"] = f"{outbox}?page=true&max_id={page[-1]}"
    return json.dumps(doc).encode()


def _author_feed(site: WatchedSite, query: dict[str, str]) -> bytes:
    numbers = sorted(site.posts["bsky"], reverse=True)
    start = int(query.get("cursor", "0"))
    limit = int(query.get("limit", "50"))
    chunk = numbers[start:start + limit]
    feed: list[dict[str, Any]] = [{"post": {
        "uri": f"at://did:plc:alice/app.bsky.feed.post/3k{n:04d}", "cid": f"bafy{n}",
        "author": {"did": "did:plc:alice", "handle": "alice.test"},
        "record": {"$type": "app.bsky.feed.post", "text": f"post {n}",
                   "createdAt": _stamp(n).isoformat()},
        "indexedAt": _stamp(n).isoformat()}} for n in chunk]
    if start == 0:
        feed.insert(0, {"post": {
            "uri": "at://did:plc:bob/app.bsky.feed.post/3zzzz", "cid": "bafybob",
            "author": {"did": "did:plc:bob", "handle": "bob.test"},
            "record": {"$type": "app.bsky.feed.post", "text": "bob's post"}},
            "reason": {"$type": "app.bsky.feed.defs#reasonRepost",
                       "by": {"did": "did:plc:alice", "handle": "alice.test"}}})
    doc: dict[str, Any] = {"feed": feed}
    if start + limit < len(numbers):
        doc["cursor"] = str(start + limit)
    return json.dumps(doc).encode()


def _telegram(site: WatchedSite, query: dict[str, str]) -> bytes:
    numbers = sorted(site.posts["tg"])
    if "before" in query:
        numbers = [n for n in numbers if n < int(query["before"])]
    shown = numbers[-3:]
    messages = "".join(
        f'<div class="tgme_widget_message_wrap js-widget_message_wrap">'
        f'<div class="tgme_widget_message text_not_supported_wrap js-widget_message" '
        f'data-post="evidence_chan/{n}" data-view="x"><div class="tgme_widget_message_text">'
        f'message {n}</div><a class="tgme_widget_message_date" '
        f'href="https://t.me/evidence_chan/{n}"><time datetime="{_stamp(n).isoformat()}">'
        f"</time></a></div></div>"
        for n in shown)
    return (f'<html><head><meta property="og:title" content="Evidence channel"></head>'
            f'<body><section class="tgme_channel_history">{messages}</section>'
            f"</body></html>").encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, site: WatchedSite) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.site = site


@pytest.fixture
def watched_site(fixture_site: FixtureSite) -> Iterator[WatchedSite]:
    """A fresh, empty watched site (each test starts with no posts)."""
    site = WatchedSite(clip=fixture_site.body("/clip.mp4"))
    server = _Server(site)
    site.base = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield site
    finally:
        site.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- archives and the CLI ------------------------------------------------------------------


def daemon_environment(home: Path, database_url: str, site: WatchedSite | None) -> dict[str, str]:
    env = {
        "ARCHIVER_HOME": str(home),
        "ARCHIVER_SIGNING__PASSPHRASE": PASSPHRASE,
        "ARCHIVER_OPERATOR": "analyst@test.example",
        "ARCHIVER_CAPTURE__ALLOW_PRIVATE_NETWORKS": "true",
        "ARCHIVER_CAPTURE__TIMEOUT_SECONDS": "20",
        "ARCHIVER_CAPTURE__FETCH_SUBRESOURCES": "false",
        "ARCHIVER_WATCH__MIN_EVERY": "0.5s",
        "ARCHIVER_WATCH__BACKFILL": "50",
        "ARCHIVER_WATCH__MAX_PAGES": "20",
        "ARCHIVER_WATCH__TIMEOUT_SECONDS": "10",
        "ARCHIVER_DAEMON__WORKERS": "2",
        "ARCHIVER_DAEMON__POLL_THREADS": "4",
        "ARCHIVER_DAEMON__IDLE_POLL_SECONDS": "0.1",
        "ARCHIVER_DAEMON__SYNC_SECONDS": "0.3",
        "ARCHIVER_DAEMON__LEASE_SECONDS": "3",
        "ARCHIVER_DAEMON__DRAIN_SECONDS": "20",
        "ARCHIVER_DAEMON__PER_HOST_CONCURRENCY": "8",
        "ARCHIVER_DAEMON__PER_HOST_RATE": "0",
        "ARCHIVER_DAEMON__RETRY_BASE_SECONDS": "0.5",
        "ARCHIVER_DAEMON__LOG_FORMAT": "json",
        "ARCHIVER_REVISIT__CHECK_SECONDS": "0.3",
        "ARCHIVER_REVISIT__SCHEDULE": json.dumps(["1s", "2s", "3s", "4s", "5s", "6s", "7s",
                                                  "8s", "10s", "15s", "20s", "30s", "60s"]),
        "ARCHIVER_REVISIT__REMOVAL_MARKERS": json.dumps(
            [{"name": "fixture-platform", "body": "removed by the platform"}]),
    }
    if site is not None:
        env["ARCHIVER_WATCH__BLUESKY_APPVIEW"] = site.base
        env["ARCHIVER_WATCH__BLUESKY_WEB"] = site.base
    # Captures here are about the daemon, not the browser or media views (when present).
    for section in ("browser", "media"):
        if section in Settings.model_fields:
            env[f"ARCHIVER_{section.upper()}__ENABLED"] = "false"
    if not database_url.startswith("sqlite"):
        env["ARCHIVER_DATABASE__URL"] = database_url
    return env


@pytest.fixture
def cli(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], watched_site: WatchedSite) -> Cli:
    """An initialised archive in a fresh directory and database, configured for fast
    daemon runs against ``watched_site``."""
    home = tmp_path / "archive"
    archive_environment(monkeypatch, home, database_url,
                        daemon_environment(home, database_url, watched_site))
    runner = Cli(home, capsys)
    runner.ok("init")
    return runner


@pytest.fixture
def start_daemon(cli: Cli, tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start ``archiver daemon`` subprocesses; any still running at the end are killed."""
    started: list[Daemon] = []

    def start(*extra: str) -> Daemon:
        daemon = Daemon(cli.home, tmp_path / f"daemon-{len(started)}.log", *extra)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.kill_all()
