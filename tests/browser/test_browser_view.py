"""The browser view of a capture: what only a browser shows, rendered by Debian's Chromium,
every request it made recorded in the capture's one WARC, the views sealed as artifacts."""

from __future__ import annotations

import hashlib
import ipaddress
import json
from pathlib import Path

import httpx
import pytest
from browser_site import (
    POST_COLOUR,
    POST_TEXT,
    Capture,
    Captured,
    Site,
    fast_options,
)
from PIL import Image
from warc_judges import Record, pywb_replay, read_records, strict_problems, warcio_check

from archiver.capture.page import record_capture
from archiver.recorder import RecorderOptions
from archiver.recorder.addresses import IPAddress, non_global_reason

WARCINFO = {"software": "evidence-archiver/test"}


def _records(done: Captured, rec_type: str, url: str | None = None) -> list[Record]:
    return [r for r in read_records(done.warc) if r.header("WARC-Type") == rec_type
            and (url is None or r.header("WARC-Target-URI") == url)]


def _judged(done: Captured) -> None:
    check = warcio_check(done.warc)
    assert check.returncode == 0, check.stdout + check.stderr
    assert strict_problems(done.warc) == []


def _artifact_path(done: Captured, name: str) -> Path:
    (found,) = [a.path for a in done.report.artifacts if a.name == name]
    return found


def only_127_0_0_1(address: IPAddress) -> str | None:
    """127.0.0.1 (the site) counts as public; everything else as the guard says."""
    return None if address == ipaddress.IPv4Address("127.0.0.1") else non_global_reason(address)


# -- what only a browser sees ------------------------------------------------------------


def test_a_post_inserted_by_javascript_is_seen_only_by_the_browser(
    browser_site: Site, capture: Capture, tmp_path: Path
) -> None:
    """A plain page fetch records no word of the post; the browser's DOM, text and
    screenshot show it, and its JSON arrived through the recorder."""
    url = browser_site.url("/post.html")
    plain = tmp_path / "plain.warc.gz"
    record_capture(url, warc_path=plain,
                   options=RecorderOptions(allow_private_networks=True, timeout_seconds=20),
                   warcinfo=WARCINFO)
    plain_responses = [r for r in read_records(plain) if r.type == "response"]
    assert [r.header("WARC-Target-URI") for r in plain_responses] == [
        url, browser_site.url("/app/render.js")]
    assert all(POST_TEXT.encode() not in r.block for r in plain_responses)

    done = capture(url)
    assert done.report.outcome.as_json() == {"status": "ok", "reason": None, "message": None}
    assert [(a.name, a.role, a.media_type) for a in done.report.artifacts] == [
        ("screenshot.png", "screenshot", "image/png"),
        ("dom.html", "dom", "text/html; charset=utf-8"),
        ("page.json", "metadata", "application/json"),
        ("page.pdf", "pdf", "application/pdf"),
    ]
    dom = _artifact_path(done, "dom.html").read_text(encoding="utf-8")
    assert f'<div id="post">{POST_TEXT}</div>' in dom
    info = json.loads(_artifact_path(done, "page.json").read_bytes())
    assert (info["title"], info["text"], info["final_url"]) == ("Post 4711", POST_TEXT, url)
    assert info["network_idle"] is True
    assert done.report.summary["title"] == "Post 4711"
    assert done.report.summary["http_status"] == 200
    (api,) = _records(done, "response", browser_site.url("/api/post.json"))
    assert api.payload == json.dumps({"text": POST_TEXT}).encode()
    assert _artifact_path(done, "page.pdf").read_bytes().startswith(b"%PDF-")
    with Image.open(_artifact_path(done, "screenshot.png")) as shot:
        assert shot.size == (1280, 900)  # the page is shorter than the viewport
        colours = dict((colour, count) for count, colour in
                       shot.convert("RGB").getcolors(maxcolors=1 << 24) or [])
    # The post's box is 780 x 280 px of #c0392b (less the glyphs on it); white elsewhere.
    assert colours[POST_COLOUR] > 150_000
    assert colours[(255, 255, 255)] > 500_000
    _judged(done)


def test_artifacts_are_resource_records_that_point_at_the_page(
    browser_site: Site, capture: Capture
) -> None:
    """Each artifact is in the WARC as a resource record with a URN of its own (never the
    page's URL), its exact bytes, and WARC-Refers-To the browser's record of the page;
    the reported digests are the files'."""
    url = browser_site.url("/post.html")
    done = capture(url)
    resources = {r.header("WARC-Target-URI"): r for r in _records(done, "resource")}
    assert sorted(resources) == sorted(f"urn:evidence-archiver:{kind}:{url}"
                                       for kind in ("screenshot", "dom", "page-info", "pdf"))
    (browser_page,) = _records(done, "revisit", url)  # same bytes as the page fetch got
    for artifact in done.report.artifacts:
        data = artifact.path.read_bytes()
        assert artifact.digest.sha256 == hashlib.sha256(data).hexdigest()
        assert artifact.digest.sha512 == hashlib.sha512(data).hexdigest()
        assert artifact.digest.size == len(data)
        kind = {"screenshot.png": "screenshot", "dom.html": "dom", "page.json": "page-info",
                "page.pdf": "pdf"}[artifact.name]
        record = resources[f"urn:evidence-archiver:{kind}:{url}"]
        assert record.block == data
        assert record.header("Content-Type") == artifact.media_type
        assert record.header("WARC-Refers-To-Target-URI") == url
        assert record.header("WARC-Refers-To") == browser_page.id
    _judged(done)


def test_a_resource_fetched_by_page_and_browser_is_stored_once(
    browser_site: Site, capture: Capture
) -> None:
    """The page fetch and the browser both load render.js: one response record, and a
    revisit record pointing at it inside the same WARC."""
    done = capture(browser_site.url("/post.html"))
    script = browser_site.url("/app/render.js")
    (response,) = _records(done, "response", script)
    (revisit,) = _records(done, "revisit", script)
    assert revisit.header("WARC-Refers-To") == response.id
    assert revisit.header("WARC-Refers-To-Target-URI") == script
    assert revisit.header("WARC-Payload-Digest") == response.header("WARC-Payload-Digest")
    assert revisit.offset > response.offset
    (request,) = [r for r in _records(done, "request", script)
                  if r.header("WARC-Concurrent-To") == revisit.id]
    assert b"HeadlessChrome/" in request.http_head  # the browser's own request headers
    _judged(done)


def test_pywb_replays_what_the_browser_fetched(
    browser_site: Site, capture: Capture, tmp_path: Path
) -> None:
    """pywb indexes the WARC (URN resource records included) and replays the page and the
    post's JSON, which only the browser requested, byte for byte."""
    done = capture(browser_site.url("/post.html"))
    work = tmp_path / "pywb"
    work.mkdir()
    with pywb_replay(done.warc, work) as base, httpx.Client(trust_env=False,
                                                            timeout=30) as client:
        page = client.get(f"{base}/c/2030id_/{browser_site.url('/post.html')}")
        api = client.get(f"{base}/c/2030id_/{browser_site.url('/api/post.json')}")
    assert page.status_code == 200
    assert b'<div id="root">' in page.content
    assert api.status_code == 200
    assert json.loads(api.content) == {"text": POST_TEXT}


# -- real pages: lazy content, endless feeds, never idle -----------------------------------


def test_lazy_images_are_loaded_by_scrolling_and_recorded(
    browser_site: Site, capture: Capture
) -> None:
    """Images that load only when scrolled into view are requested by the browser and
    are responses in the WARC; the page fetch alone never saw them."""
    browser_site.clear()
    done = capture(browser_site.url("/lazy.html"))
    for path in ("/lazy/1.png", "/lazy/2.png", "/lazy/3.png", "/lazy/native.png"):
        (record,) = _records(done, "response", browser_site.url(path))
        assert record.block.startswith(b"HTTP/1.0 200 OK\r\n")
    # The native loading=lazy image has a src the page fetch follows; the browser asks
    # for it last, after scrolling past the three scripted ones.
    assert [p for p in browser_site.paths() if p.startswith("/lazy/")] == [
        "/lazy/native.png", "/lazy/1.png", "/lazy/2.png", "/lazy/3.png", "/lazy/native.png"]
    assert len(_records(done, "revisit", browser_site.url("/lazy/native.png"))) == 1
    summary = done.report.summary
    assert summary["reached_bottom"] is True
    assert 7 <= summary["scrolls"] <= 9  # ~8,000 px in 900 px steps
    assert done.report.outcome.status == "ok"
    _judged(done)


def test_scrolling_stops_at_max_scrolls_on_an_endless_feed(
    browser_site: Site, capture: Capture
) -> None:
    """An endless feed is scrolled max_scrolls times, not forever, and the capture says
    the bottom was not reached."""
    browser_site.clear()
    done = capture(browser_site.url("/feed.html"), options=fast_options(max_scrolls=3))
    assert done.report.summary["scrolls"] == 3
    assert done.report.summary["reached_bottom"] is False
    feeds = [p for p in browser_site.paths() if p.startswith("/feed/")]
    assert feeds in (["/feed/1.json"], ["/feed/1.json", "/feed/2.json"],
                     ["/feed/1.json", "/feed/2.json", "/feed/3.json"])
    assert len(_records(done, "response", browser_site.url("/feed/1.json"))) == 1


def test_a_page_that_never_falls_quiet_is_captured_at_the_deadline(
    browser_site: Site, capture: Capture
) -> None:
    """A page polling forever: the browser phase ends within its budget, the views are
    made, and the outcome says network idle was not reached."""
    done = capture(browser_site.url("/endless.html"),
                   options=fast_options(timeout_seconds=9, network_idle_seconds=3))
    outcome = done.report.outcome
    assert (outcome.status, outcome.reason) == ("partial", "network-not-idle")
    assert outcome.message is not None
    assert "network idle not reached within 3 s" in outcome.message
    assert done.report.summary["network_idle"] is False
    assert done.report.summary["load_event"] is True
    assert {a.name for a in done.report.artifacts} == {
        "screenshot.png", "dom.html", "page.json", "page.pdf"}
    assert done.report.provenance["durations_s"]["total"] < 9
    assert done.seconds < 15
    ticks = _records(done, "request", browser_site.url("/tick"))
    assert len(ticks) >= 10  # every poll was recorded while we waited
    _judged(done)


def test_a_page_cannot_make_more_than_max_requests(browser_site: Site, capture: Capture) -> None:
    """Past browser.max_requests the browser's requests are refused before any
    connection, counted, and the capture says so."""
    done = capture(browser_site.url("/endless.html"), options=fast_options(max_requests=5))
    ticks = _records(done, "request", browser_site.url("/tick"))
    assert len(ticks) == 4  # the document, then four polls; the fifth poll is refused
    assert done.report.provenance["not_recorded"] == {"request-limit": 1}
    (note,) = done.report.provenance["notes"]
    assert note == {"url": browser_site.url("/tick"), "kind": "request-limit",
                    "detail": "the page made more than 5 requests (browser.max_requests); "
                              "not made"}
    assert done.report.outcome.reason == "not-recorded"


# -- the guard and what is refused -----------------------------------------------------------


def test_a_private_address_is_never_reached_from_the_browser(
    browser_site: Site, private_site: Site, capture: Capture
) -> None:
    """With private networks refused (127.0.0.1 counting as public here), the page's
    script and image aimed at 127.0.0.2 are refused before any connection: the server
    there gets nothing, the WARC holds nothing of it, and the capture says so."""
    private_site.clear()
    done = capture(browser_site.url("/private.html"), allow_private=False,
                   address_policy=only_127_0_0_1)
    assert private_site.hits == []
    uris = {r.header("WARC-Target-URI") or "" for r in read_records(done.warc)}
    assert not any("127.0.0.2" in uri for uri in uris)
    refused = [n for n in done.report.provenance["notes"] if n["kind"] == "refused"]
    assert sorted(n["url"] for n in refused) == sorted(
        [private_site.url("/admin"), private_site.url("/inner.png")])
    assert all("127.0.0.2 is a loopback address" in n["detail"] for n in refused)
    outcome = done.report.outcome
    assert (outcome.status, outcome.reason) == ("partial", "not-recorded")
    assert "2 request(s) of the page not recorded (refused 2;" in str(outcome.message)
    assert done.report.summary["not_recorded"] == 2
    _judged(done)


def test_websockets_are_refused_and_noted(browser_site: Site, capture: Capture) -> None:
    """A WebSocket never reaches the server: the attempt is a note, and the page saw it
    closed with code 1008."""
    browser_site.clear()
    ws = capture(browser_site.url("/ws.html"))
    assert [(n["kind"], n["url"]) for n in ws.report.provenance["notes"]] == [
        ("websocket", f"ws://127.0.0.1:{browser_site.port}/socket")]
    dom = _artifact_path(ws, "dom.html").read_text(encoding="utf-8")
    assert "closed 1008" in dom
    assert "/socket" not in browser_site.paths()


def test_event_streams_are_refused_and_noted(browser_site: Site, capture: Capture) -> None:
    """A server-sent event stream never ends: it is refused up front, never requested."""
    browser_site.clear()
    done = capture(browser_site.url("/sse.html"))
    assert [(n["kind"], n["url"]) for n in done.report.provenance["notes"]] == [
        ("event-stream", browser_site.url("/events"))]
    assert "/events" not in browser_site.paths()
    assert done.report.outcome.reason == "not-recorded"


def test_webrtc_sends_no_packet_around_the_recorder(
    browser_site: Site, capture: Capture, stun_socket: object
) -> None:
    """A page's RTCPeerConnection with a STUN server on 127.0.0.1: not one UDP packet
    arrives there (WebRTC may not go around the proxy)."""
    import socket

    assert isinstance(stun_socket, socket.socket)
    done = capture(browser_site.url("/webrtc.html"))
    assert done.report.outcome.status == "ok"
    received = []
    for _ in range(5):  # ~1 s more for a late packet
        try:
            received.append(stun_socket.recvfrom(2048))
        except TimeoutError:
            continue
    assert received == []


# -- walls, dialogs, redirects, media --------------------------------------------------------


def test_a_cookie_wall_is_reported_not_dismissed(browser_site: Site, capture: Capture) -> None:
    """A consent banner is what the capture shows: nothing is clicked (the page's consent
    endpoints are never called) and the outcome names the wall and why."""
    browser_site.clear()
    done = capture(browser_site.url("/cookie-wall.html"))
    assert done.report.summary["walls"] == ["cookie-consent"]
    assert done.report.provenance["walls"] == [
        {"name": "cookie-consent", "evidence": "visible consent element #cookie-banner"}]
    outcome = done.report.outcome
    assert (outcome.status, outcome.reason) == ("partial", "wall")
    assert "nothing was dismissed" in str(outcome.message)
    assert not any(p.startswith("/consent/") for p in browser_site.paths())
    assert 'id="cookie-banner"' in _artifact_path(done, "dom.html").read_text(encoding="utf-8")


def test_a_login_page_is_reported_as_a_login_wall(browser_site: Site, capture: Capture) -> None:
    """A post that lands on a login page is recorded as such, and the capture says so."""
    done = capture(browser_site.url("/login"))
    assert done.report.provenance["walls"] == [
        {"name": "login", "evidence": "login address /login"}]
    assert done.report.outcome.reason == "wall"


def test_javascript_dialogs_are_dismissed_and_reported(
    browser_site: Site, capture: Capture
) -> None:
    """An alert() would block the page: it is dismissed, and the capture lists it."""
    done = capture(browser_site.url("/dialog.html"))
    assert done.report.provenance["dialogs"] == [
        {"type": "alert", "message": "Are you a robot?"}]
    assert done.report.summary["dialogs"] == 1
    assert "after the alert" in _artifact_path(done, "dom.html").read_text(encoding="utf-8")
    assert "1 JavaScript dialog(s) dismissed" in str(done.report.outcome.message)


def test_navigation_redirects_are_recorded_hop_by_hop(
    browser_site: Site, capture: Capture
) -> None:
    """The browser's redirect chain is followed by the recorder (every hop recorded and
    guarded, none sent by Playwright on its own); the browser ends on the final page,
    which is fetched once for it, and nothing needs a note."""
    done = capture(browser_site.url("/redirect-start"))
    assert done.report.summary["final_url"] == browser_site.url("/post.html")
    assert POST_TEXT in _artifact_path(done, "page.json").read_text(encoding="utf-8")
    for hop in ("/redirect-start", "/redirect-mid"):
        records = _records(done, "response", browser_site.url(hop))
        assert len(records) == 2  # the page fetch's and the browser's
        assert all(r.block.startswith(b"HTTP/1.0 302 Found\r\n") for r in records)
    final = browser_site.url("/post.html")
    assert len(_records(done, "request", final)) == 2  # the page fetch's and the browser's
    assert done.report.provenance["notes"] == []
    _judged(done)


def test_a_subresource_redirect_is_followed_by_the_recorder(
    browser_site: Site, capture: Capture
) -> None:
    """An image behind a redirect: both hops recorded by the browser's exchange, and the
    capture notes that the browser got the image at the first address."""
    done = capture(browser_site.url("/subredirect.html"))
    (note,) = done.report.provenance["notes"]
    assert note == {
        "url": browser_site.url("/img-redirect"), "kind": "redirected",
        "detail": f"followed 1 redirect(s) to {browser_site.url('/pixel.png')}; the browser "
                  "was given that response at the first address"}
    assert len(_records(done, "response", browser_site.url("/img-redirect"))) == 2
    assert done.report.outcome.status == "ok"


def test_media_seen_by_the_browser_is_handed_to_the_media_capture(
    browser_site: Site, capture: Capture
) -> None:
    """Video responses, an HLS playlist and <source> elements the browser saw are in the
    summary and on the session, for the media fetcher that runs next."""
    done = capture(browser_site.url("/media.html"))
    expected = {browser_site.url(p) for p in
                ("/media/clip.mp4", "/media/other.mp4", "/media/playlist.m3u8")}
    assert set(done.report.summary["media_urls"]) == expected
    assert set(done.discovered_media) == expected
    assert len(done.discovered_media) == 3


def test_a_download_is_not_a_page(browser_site: Site, capture: Capture) -> None:
    """A URL Chromium would download rather than render: outcome none (not-a-page), no
    artifacts; the page fetch recorded it."""
    done = capture(browser_site.url("/evidence.bin"))
    outcome = done.report.outcome
    assert (outcome.status, outcome.reason) == ("none", "not-a-page")
    assert outcome.message == (
        f"{browser_site.url('/evidence.bin')} is application/octet-stream, not a page: "
        "nothing to render (the page and media fetchers keep it)")
    assert done.report.artifacts == ()
    assert len(_records(done, "response", browser_site.url("/evidence.bin"))) == 1
    assert not (done.work / "browser").exists()  # Chromium was never started


def test_a_page_chromium_downloads_is_not_a_page(browser_site: Site, capture: Capture) -> None:
    """An HTML page fetch, but Chromium gets a file (the server answers the browser
    differently): the browser's download attempt is outcome none, not a failure."""
    done = capture(browser_site.url("/download-for-browsers"))
    outcome = done.report.outcome
    assert (outcome.status, outcome.reason) == ("none", "not-a-page")
    assert "is a download in the browser, not a page" in str(outcome.message)
    assert done.report.artifacts == ()


# -- the page moving the main frame on its own ---------------------------------------------


@pytest.mark.parametrize(("path", "target", "reason"), [
    ("/refresh-private.html", "{private}/landing.html", "127.0.0.2 is a loopback address"),
    ("/script-nav-private.html", "http://10.0.0.1/", "10.0.0.1 is a private address"),
])
def test_a_page_navigating_itself_to_a_refused_address_is_still_rendered(
    browser_site: Site, private_site: Site, capture: Capture, path: str, target: str,
    reason: str,
) -> None:
    """A meta refresh or a script sending the main frame to an address the guard refuses
    cannot kill the view: that navigation is aborted, the page stays and is photographed,
    and the outcome names the refused navigation."""
    private_site.clear()
    target = target.format(private=private_site.base)
    done = capture(browser_site.url(path), allow_private=False,
                   address_policy=only_127_0_0_1)
    assert private_site.hits == []
    summary = done.report.summary
    assert summary["final_url"] == browser_site.url(path)
    assert {"screenshot.png", "dom.html", "page.json"} <= set(summary["artifacts"])
    page = json.loads(_artifact_path(done, "page.json").read_text(encoding="utf-8"))
    assert "Public page before the" in page["text"]
    (note,) = done.report.provenance["notes"]
    assert (note["url"], note["kind"]) == (target, "navigation-refused")
    assert reason in note["detail"]
    outcome = done.report.outcome
    assert (outcome.status, outcome.reason) == ("partial", "not-recorded"), outcome.message
    assert (f"the page tried to navigate to {target} on its own (meta refresh or script): "
            "refused, the views show the page as it was") in str(outcome.message)
    _judged(done)


def test_a_page_navigating_itself_to_an_allowed_page_is_not_followed(
    browser_site: Site, capture: Capture
) -> None:
    """A meta refresh to another (allowed) page is not followed: the views show the page
    that was asked for, and the outcome says where the page wanted to go."""
    browser_site.clear()
    done = capture(browser_site.url("/refresh-public.html"))
    target = browser_site.url("/post.html")
    assert done.report.summary["final_url"] == browser_site.url("/refresh-public.html")
    page = json.loads(_artifact_path(done, "page.json").read_text(encoding="utf-8"))
    assert "Public page before the refresh" in page["text"]
    assert "/post.html" not in browser_site.paths()
    (note,) = done.report.provenance["notes"]
    assert (note["url"], note["kind"]) == (target, "navigation-not-followed")
    outcome = done.report.outcome
    assert outcome.status == "ok"
    assert outcome.message == (
        f"the page tried to navigate to {target} on its own (meta refresh or script): not "
        "followed, the views show the page as it was (capture that URL to keep it)")
    assert "screenshot.png" in done.report.summary["artifacts"]
