"""Each source against the watched site's real formats, as the site gains posts; the
guard on listing fetches; ``auto`` detection."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from daemon_fixtures import WatchedSite

from archiver.watch.sources import ListRequest, SourceError, detect
from archiver.watch.sources.activitypub import ActivityPubSource
from archiver.watch.sources.base import Pager, Post
from archiver.watch.sources.bluesky import BlueskySource, actor_of
from archiver.watch.sources.channel import ChannelSource, entry_url
from archiver.watch.sources.feed import FeedSource
from archiver.watch.sources.fetch import GuardedFetcher
from archiver.watch.sources.page import PageSource, text_fingerprint
from archiver.watch.sources.telegram import TelegramSource, preview_url


@pytest.fixture
def fetcher() -> Iterator[GuardedFetcher]:
    with GuardedFetcher(allow_private_networks=True, timeout_seconds=10) as made:
        yield made


def request(url: str, *, known: Sequence[str] = (), want: int | None = None,
            max_pages: int = 10, page_size: int = 50, pattern: str | None = None,
            state: dict[str, object] | None = None) -> ListRequest:
    seen = set(known)
    return ListRequest(url=url, state=state or {}, want=want, max_pages=max_pages,
                       page_size=page_size, known=lambda keys: seen & set(keys),
                       pattern=pattern)


def urls(posts: Sequence[Post]) -> list[str]:
    return [p.url for p in posts]


def test_rss_lists_posts_newest_first_and_honours_etag(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """RSS 2.0: item links newest first; the ETag comes back as If-None-Match and an
    unchanged feed (304) lists nothing; a grown feed lists the new item first."""
    site = watched_site
    published = site.publish("rss", 3)
    source = FeedSource(fetcher)
    first = source.list_posts(request(site.url("/feeds/rss.xml")))
    assert urls(first.posts) == published[::-1]
    assert first.state["etag"]
    again = source.list_posts(request(site.url("/feeds/rss.xml"), state=dict(first.state)))
    assert again.not_modified
    assert again.posts == ()
    assert site.conditional_hits == 1
    (newest,) = site.publish("rss")
    grown = source.list_posts(request(site.url("/feeds/rss.xml"), state=dict(first.state)))
    assert urls(grown.posts)[0] == newest
    assert len(grown.posts) == 4


def test_atom_entries_are_listed_by_their_alternate_link(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """Atom 1.0: each entry's rel=alternate link is the post URL."""
    published = watched_site.publish("atom", 2)
    listing = FeedSource(fetcher).list_posts(request(watched_site.url("/feeds/atom.xml")))
    assert urls(listing.posts) == published[::-1]


def test_a_page_that_is_not_a_feed_is_refused(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """An HTML page watched as a feed fails the poll with a message naming the URL."""
    with pytest.raises(SourceError, match="is not an RSS or Atom feed"):
        FeedSource(fetcher).list_posts(request(watched_site.url("/links.html")))


def test_activitypub_follows_actor_outbox_and_pages_skipping_boosts(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """Actor → outbox → first page → next pages (2 Creates each): every Note's url is
    listed newest first, boosts are not, and the outbox is kept for the next poll."""
    site = watched_site
    published = site.publish("ap", 5)
    source = ActivityPubSource(fetcher)
    listing = source.list_posts(request(site.url("/users/alice")))
    assert urls(listing.posts) == published[::-1]
    assert listing.pages == 3
    assert listing.state == {"outbox": site.url("/users/alice/outbox")}
    assert not any("elsewhere.example" in u for u in urls(listing.posts))


def test_activitypub_stops_paging_at_a_known_post(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """Once a page holds a post the watch has seen, older pages are not fetched."""
    site = watched_site
    published = site.publish("ap", 6)
    listing = ActivityPubSource(fetcher).list_posts(
        request(site.url("/users/alice/outbox"), known=[published[4]]))
    assert listing.pages == 1
    assert urls(listing.posts) == [published[5], published[4]]


def test_bluesky_author_feed_pages_by_cursor_and_skips_reposts(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """getAuthorFeed with limit=2 and cursors: every own post, newest first, as its web
    URL, keyed by its at:// URI; the repost of someone else's post is not listed."""
    site = watched_site
    published = site.publish("bsky", 5)
    source = BlueskySource(fetcher, appview=site.base, web=site.base)
    listing = source.list_posts(request(site.url("/profile/alice.test"), page_size=2))
    assert urls(listing.posts) == published[::-1]
    assert listing.pages == 3
    assert listing.posts[0].key == "at://did:plc:alice/app.bsky.feed.post/3k0005"
    assert "bob" not in " ".join(urls(listing.posts))


def test_bluesky_watch_url_must_name_a_profile() -> None:
    """A Bluesky URL without /profile/<actor> is refused before any fetch."""
    assert actor_of("https://bsky.app/profile/did:plc:abc") == "did:plc:abc"
    with pytest.raises(SourceError, match="not a Bluesky profile URL"):
        actor_of("https://bsky.app/search?q=x")


def test_telegram_preview_pages_back_with_before(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """t.me/s/NAME shows 3 messages a page, oldest first; ?before=ID pages back; posts
    come out newest first as <host>/NAME/ID."""
    site = watched_site
    published = site.publish("tg", 7)
    listing = TelegramSource(fetcher).list_posts(request(site.url("/s/evidence_chan")))
    assert urls(listing.posts) == published[::-1]
    assert listing.pages == 4  # the fourth, empty, page says there is nothing older
    first_poll = TelegramSource(fetcher).list_posts(
        request(site.url("/s/evidence_chan"), want=2))
    assert urls(first_poll.posts) == published[::-1][:3]


def test_telegram_urls_become_preview_urls() -> None:
    """A channel or post URL on t.me is watched through its /s/ preview."""
    assert preview_url("https://t.me/evidence_chan") == "https://t.me/s/evidence_chan"
    assert preview_url("https://t.me/evidence_chan/12") == "https://t.me/s/evidence_chan"
    assert preview_url("https://t.me/s/evidence_chan") == "https://t.me/s/evidence_chan"


def test_page_links_matching_the_pattern(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """A page with a pattern lists its matching links, absolute, without fragments."""
    site = watched_site
    published = site.publish("links", 2)
    listing = PageSource(fetcher).list_posts(
        request(site.url("/links.html"), pattern=r"/articles/\d+$"))
    assert urls(listing.posts) == published[::-1]


def test_page_without_pattern_changes_only_with_its_visible_text(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """Without a pattern the page itself is the post, keyed by its text's fingerprint: a
    changing script token is not a change, a changed paragraph is."""
    site = watched_site
    source = PageSource(fetcher)
    one = source.list_posts(request(site.url("/changing.html")))
    two = source.list_posts(request(site.url("/changing.html")))
    assert one.posts == two.posts
    assert one.posts[0].url == site.url("/changing.html")
    site.change_page()
    three = source.list_posts(request(site.url("/changing.html")))
    assert three.posts[0].key != one.posts[0].key
    assert text_fingerprint("<p>a  b</p>") == text_fingerprint("<p>a b</p><script>x</script>")


def test_channel_lists_videos_through_yt_dlp_flat_extraction(
    watched_site: WatchedSite, fetcher: GuardedFetcher
) -> None:
    """yt-dlp's generic extractor lists a page of <video> elements as a playlist; each
    video's URL is a post (nothing is downloaded)."""
    site = watched_site
    published = site.publish("video", 3)
    listing = ChannelSource(fetcher).list_posts(request(site.url("/channel.html")))
    assert sorted(urls(listing.posts)) == sorted(published)
    assert all(site.hit_count(f"/videos/{n}.mp4") == 0 for n in (1, 2, 3))


def test_channel_entry_urls_prefer_the_video_page() -> None:
    """Flat entries give the video's page; full entries their own webpage_url; the media
    URL is the last resort; the playlist's own page never stands for a video."""
    page = "https://example.org/channel"
    assert entry_url({"_type": "url", "url": "https://v.example/watch?v=1"}, page) == \
        "https://v.example/watch?v=1"
    assert entry_url({"webpage_url": "https://v.example/2", "url": "https://cdn/2.mp4"},
                     page) == "https://v.example/2"
    assert entry_url({"webpage_url": page, "url": "https://cdn/3.mp4"}, page) == \
        "https://cdn/3.mp4"
    assert entry_url({"url": "file:///etc/passwd"}, page) is None


def test_listing_fetches_are_refused_for_private_addresses_by_default(
    watched_site: WatchedSite,
) -> None:
    """With the guard on, a loopback target is refused: as a literal address before
    connecting, as a name at connect time, and before yt-dlp is handed the URL."""
    with GuardedFetcher(allow_private_networks=False) as guarded:
        with pytest.raises(SourceError, match="loopback"):
            guarded.get(watched_site.url("/feeds/rss.xml"))
        port = watched_site.base.rsplit(":", 1)[1]
        with pytest.raises(SourceError, match="loopback"):
            guarded.get(f"http://localhost:{port}/feeds/rss.xml")
        with pytest.raises(SourceError, match="loopback"):
            ChannelSource(guarded).list_posts(request(watched_site.url("/channel.html")))


def test_every_redirect_hop_is_checked(watched_site: WatchedSite) -> None:
    """A redirect to a refused address is refused at that hop (here the policy refuses
    127.0.0.2 and allows the site's 127.0.0.1); endless redirects stop at the limit."""

    def policy(address: object) -> str | None:
        return "a refused test address" if str(address) == "127.0.0.2" else None

    with GuardedFetcher(allow_private_networks=False, policy=policy,
                        max_redirects=3) as guarded:
        assert guarded.get(watched_site.url("/feeds/rss.xml")).status == 200
        with pytest.raises(SourceError, match=r"127\.0\.0\.2 is a refused test address"):
            guarded.get(watched_site.url("/to-other-address"))
        with pytest.raises(SourceError, match="more than 3 redirects"):
            guarded.get(watched_site.url("/hop/1"))


def test_yt_dlp_listing_requests_pass_the_guard_too(watched_site: WatchedSite) -> None:
    """yt-dlp lists a channel through a guarded recording session: a redirect it would
    follow on its own to a refused address (127.0.0.2 here) is refused at that hop,
    while the allowed channel still lists."""

    def policy(address: object) -> str | None:
        return "a refused test address" if str(address) == "127.0.0.2" else None

    published = watched_site.publish("video", 2)
    with GuardedFetcher(allow_private_networks=False, policy=policy) as guarded:
        listing = ChannelSource(guarded).list_posts(request(watched_site.url("/channel.html")))
        assert sorted(urls(listing.posts)) == sorted(published)
        with pytest.raises(SourceError, match=r"127\.0\.0\.2 is a refused test address"):
            ChannelSource(guarded).list_posts(request(watched_site.url("/to-other-address")))


def test_listing_size_and_scheme_limits(watched_site: WatchedSite) -> None:
    """A listing larger than watch.max_listing_bytes fails the poll; so does a scheme
    other than http(s)."""
    watched_site.publish("rss", 30)
    with GuardedFetcher(allow_private_networks=True, max_bytes=1000) as small:
        with pytest.raises(SourceError, match=r"larger than watch\.max_listing_bytes"):
            small.get(watched_site.url("/feeds/rss.xml"))
        with pytest.raises(SourceError, match="scheme 'file' is not allowed"):
            small.get("file:///etc/passwd")


def test_pager_stops_at_want_at_max_pages_and_at_known_posts() -> None:
    """The paging rule: first poll reads until `want` posts; later polls read back until
    a page holds a known post; never more than max_pages; keys de-duplicated."""
    def page(*names: str) -> list[Post]:
        return [Post(url=f"https://x/{n}", key=n) for n in names]

    first = Pager(request("https://x/", want=3))
    first.add_page(page("9", "8"))
    assert first.more
    first.add_page(page("7", "6"))
    assert not first.more
    later = Pager(request("https://x/", known=["7"]))
    later.add_page(page("9", "8"))
    assert later.more
    later.add_page(page("8", "7"))
    assert not later.more
    assert [p.key for p in later.posts] == ["9", "8", "7"]
    capped = Pager(request("https://x/", max_pages=2))
    capped.add_page(page("1"))
    capped.add_page(page("2"))
    assert not capped.more


def test_auto_detects_every_kind(watched_site: WatchedSite, fetcher: GuardedFetcher) -> None:
    """auto: feeds, ActivityPub actors (to their outbox), Bluesky profiles, Telegram
    previews (by content, and t.me by URL), video platforms by URL, else a page."""
    site = watched_site
    web = site.base

    def kind(url: str) -> tuple[str, str]:
        found = detect(url, fetcher, bluesky_web=web)
        return found.kind, found.source_url

    assert kind(site.url("/feeds/rss.xml")) == ("feed", site.url("/feeds/rss.xml"))
    assert kind(site.url("/feeds/atom.xml"))[0] == "feed"
    assert kind(site.url("/users/alice")) == ("activitypub", site.url("/users/alice/outbox"))
    assert kind(site.url("/profile/alice.test"))[0] == "bluesky"
    assert kind(site.url("/s/evidence_chan"))[0] == "telegram"
    assert kind(site.url("/links.html")) == ("page", site.url("/links.html"))
    assert kind("https://t.me/evidence_chan") == ("telegram", "https://t.me/s/evidence_chan")
    assert kind("https://www.youtube.com/@SomeChannel")[0] == "channel"
    assert kind("https://www.youtube.com/playlist?list=PL123")[0] == "channel"
