"""The media fetcher against ffmpeg-made media on 127.0.0.1: what lands in the WARC, what
becomes an artifact, and which outcome each kind of post gets. Judges: warcio's checker,
the strict WARC reader, sha256 of the bytes served, the server's own request log."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from warc_judges import Record, read_records, strict_problems, warcio_check

from archiver.capture.fetcher import DerivedArtifact
from archiver.capture.media import MediaFetcher, MediaOptions
from archiver.capture.media.handler import MediaTraffic, RecordingYoutubeDL
from archiver.capture.page import PageCapture, capture_page
from archiver.recorder import RecorderOptions, open_session
from archiver.recorder.addresses import IPAddress, non_global_reason
from archiver.recorder.wire import Deadline


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _records(captured: Any, rec_type: str) -> list[Record]:
    return [r for r in read_records(captured.warc) if r.type == rec_type]


def _request_paths(captured: Any) -> Counter[str]:
    paths: Counter[str] = Counter()
    for request in _records(captured, "request"):
        line = request.block.split(b"\r\n", 1)[0].decode()
        paths[line.split(" ")[1]] += 1
    return paths


def _judged(captured: Any, site: Any) -> None:
    """The WARC is valid, and every request the server saw is a request record in it."""
    assert warcio_check(captured.warc).returncode == 0
    assert strict_problems(captured.warc) == []
    served = Counter(path for _method, path, _agent in site.seen())
    assert served == _request_paths(captured)


def _identities(captured: Any) -> list[Record]:
    """The metadata records saying a media file is exactly one response's payload."""
    return [r for r in _records(captured, "metadata")
            if r.header("Content-Type") == "application/warc-fields"]


def _fields(record: Record) -> dict[str, str]:
    lines = record.block.decode("utf-8").splitlines()
    return dict(line.split(": ", 1) for line in lines if line)


def _payload(response: Record) -> bytes:
    return response.block.split(b"\r\n\r\n", 1)[1]


def _media(captured: Any) -> list[DerivedArtifact]:
    return [a for a in captured.report.artifacts if a.role == "media"]


def _responded(captured: Any) -> set[str]:
    return {urlsplit(r.header("WARC-Target-URI") or "").path
            for r in read_records(captured.warc) if r.type in ("response", "revisit")
            and r.block.startswith(b"HTTP/1.1 200")}


def test_direct_mp4_is_downloaded_once_and_stored_once_in_the_warc(
    site: Any, capture: Callable[..., Any]
) -> None:
    """A URL that is a video: the page record stops at the headers, yt-dlp downloads it,
    the artifact is the served bytes, and the WARC holds those bytes once: in the
    response they came in, named by a small identity record (no resource copy)."""
    captured = capture(site.url("/clip.mp4"))
    assert captured.page.body_deferred is True
    assert captured.page.status == 200
    assert captured.report.outcome.status == "ok"
    (video,) = _media(captured)
    assert video.name == "media-clip.mp4"
    assert video.media_type == "video/mp4"
    assert video.digest.sha256 == site.sha256("/clip.mp4")
    assert video.digest.size == len(site.served("/clip.mp4"))
    page_response = _records(captured, "response")[0]
    assert page_response.header("WARC-Truncated") == "length"
    assert _records(captured, "resource") == []
    (identity,) = _identities(captured)
    refers = identity.header("WARC-Refers-To")
    (response,) = [r for r in read_records(captured.warc) if r.id == refers]
    assert response.type == "response"
    assert _payload(response) == site.served("/clip.mp4")
    fields = _fields(identity)
    assert fields["file"] == "media-clip.mp4"
    assert fields["sha256"] == video.digest.sha256
    assert fields["sha512"] == video.digest.sha512
    assert fields["payload-digest"] == response.header("WARC-Payload-Digest")
    (item,) = captured.report.summary["items"]
    assert item["warc_record"] == "identity"
    assert item["warc_refers_to"] == refers
    # the video is whole in one record of the WARC: the response it came in (the page
    # fetcher's record of the same URL stops after the headers, marked truncated)
    served = site.served("/clip.mp4")
    assert [r.id for r in read_records(captured.warc)
            if served in r.block and r.header("WARC-Truncated") is None] == [refers]
    assert item["extractor"] == "Generic"
    assert item["format_id"] == "mp4"
    assert [h["position"] for h in item["pdq"]] == [0, 1, 2]
    assert {a.name for a in captured.report.artifacts} == {"media-clip.mp4",
                                                          "media-clip.info.json"}
    _judged(captured, site)


def test_video_page_source_element_is_captured_with_info_json(
    site: Any, capture: Callable[..., Any]
) -> None:
    """A page with <video><source><track>: the video's digest is the served file's,
    info.json and the subtitles (as served) are metadata artifacts, and the manifest
    summary names yt-dlp's version and format."""
    captured = capture(site.url("/video.html"))
    assert captured.page.body_deferred is False
    (video,) = _media(captured)
    assert video.digest.sha256 == site.sha256("/clip.mp4")
    subtitles, info = sorted((a for a in captured.report.artifacts if a.role == "metadata"),
                             key=lambda a: a.name)
    assert info.name == "media-video-1.info.json"
    assert info.media_type == "application/json"
    assert b'"webpage_url"' in info.path.read_bytes()
    assert subtitles.name == "media-video-1.en.vtt"
    assert subtitles.media_type == "text/vtt"
    assert subtitles.digest.sha256 == site.sha256("/subs.vtt")
    assert {"what": "en", "artifact": "media-video-1.en.vtt"}.items() <= next(
        f for f in captured.report.summary["files"] if f["what"] == "en").items()
    summary = captured.report.summary
    assert re.fullmatch(r"\d{4}\.\d{2}\.\d{2}.*", summary["yt_dlp_version"])
    assert captured.report.software["yt-dlp"] == summary["yt_dlp_version"]
    assert summary["items"][0]["extractor"] == "HTML5MediaEmbed"
    assert summary["items"][0]["source_url"] == site.url("/clip.mp4")
    _judged(captured, site)


def test_hls_stream_every_segment_is_in_the_warc(
    site: Any, capture: Callable[..., Any]
) -> None:
    """HLS through yt-dlp's native downloader: a response record for every segment the
    playlist lists, and the joined file as a conversion record referring to the playlist."""
    captured = capture(site.url("/hls.html"))
    assert captured.report.outcome.status == "ok"
    playlist = site.served("/hls/index.m3u8").decode()
    segments = {f"/hls/{line}" for line in playlist.splitlines()
                if line and not line.startswith("#")}
    assert len(segments) >= 2
    assert segments <= _responded(captured)
    (conversion,) = _records(captured, "conversion")
    assert conversion.header("WARC-Target-URI") == site.url("/hls/index.m3u8")
    playlist_ids = {r.id for r in read_records(captured.warc)
                    if r.header("WARC-Target-URI") == site.url("/hls/index.m3u8")}
    assert conversion.header("WARC-Refers-To") in playlist_ids
    (video,) = _media(captured)
    assert video.digest.sha256 == hashlib.sha256(conversion.block).hexdigest()
    assert captured.report.summary["items"][0]["protocols"] == ["m3u8_native"]
    _judged(captured, site)


def test_aes_128_hls_is_decrypted_natively_with_key_and_segments_in_the_warc(
    site: Any, capture: Callable[..., Any], tmp_path: Path
) -> None:
    """AES-128 HLS (common on platforms): yt-dlp fetches the key and every encrypted
    segment through the recorder and decrypts them itself; the sealed file plays."""
    captured = capture(site.url("/aes.html"))
    assert captured.report.outcome.status == "ok", captured.report.outcome
    playlist = site.served("/aes/index.m3u8").decode()
    assert "METHOD=AES-128" in playlist
    segments = {f"/aes/{line}" for line in playlist.splitlines()
                if line and not line.startswith("#")}
    assert len(segments) >= 2
    assert segments | {"/aes/key.bin"} <= _responded(captured)
    (video,) = _media(captured)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
         str(video.path)], capture_output=True, text=True, check=True, timeout=60)
    assert "video" in probe.stdout.split()
    encrypted = b"".join(site.served(path) for path in sorted(segments))
    assert encrypted[:188] not in video.path.read_bytes()  # what was sealed is decrypted
    _judged(captured, site)


def test_dash_stream_every_segment_is_in_the_warc_and_merged(
    site: Any, capture: Callable[..., Any]
) -> None:
    """DASH (separate video and audio): every init and media segment ffmpeg wrote has a
    response record; yt-dlp merges the two with ffmpeg, kept as a conversion record."""
    captured = capture(site.url("/dash/manifest.mpd"))
    assert captured.report.outcome.status == "ok"
    segments = {p for p in site.routes if p.startswith("/dash/") and p.endswith(".m4s")}
    assert any("stream1" in p for p in segments)
    assert segments <= _responded(captured)
    (item,) = captured.report.summary["items"]
    assert item["format_id"] == "0+1"
    assert item["warc_record"] == "conversion"
    (conversion,) = _records(captured, "conversion")
    assert hashlib.sha256(conversion.block).hexdigest() == _media(captured)[0].digest.sha256
    _judged(captured, site)


def test_gallery_of_three_images_skips_the_icon_and_the_missing_one(
    site: Any, capture: Callable[..., Any]
) -> None:
    """Three <img> photos become media artifacts (served bytes, PDQ hash each); the
    16-pixel icon is left out; a 404 <img> is a warning, not a failed media capture."""
    captured = capture(site.url("/gallery.html"))
    assert captured.report.outcome.status == "ok"
    images = _media(captured)
    assert [a.name for a in images] == ["media-photo1.png", "media-photo2.png",
                                        "media-photo3.png"]
    for index, image in enumerate(images, 1):
        assert image.digest.sha256 == site.sha256(f"/photo{index}.png")
        assert image.media_type == "image/png"
    items = captured.report.summary["items"]
    assert [item["kind"] for item in items] == ["image"] * 3
    assert all(len(item["pdq"]) == 1 and len(item["pdq"][0]["pdq"]) == 64 for item in items)
    assert any("missing-photo.png: HTTP 404" in w
               for w in captured.report.provenance["warnings"])
    assert [_fields(r)["file"] for r in _identities(captured)] == [
        "media-photo1.png", "media-photo2.png", "media-photo3.png"]
    assert _records(captured, "resource") == []
    _judged(captured, site)


def test_media_url_answering_404_fails_media_as_not_found(
    site: Any, capture: Callable[..., Any]
) -> None:
    """The post is there, its video 404s: the media outcome is failed/not-found, the 404
    exchanges are in the WARC, and no media artifact exists."""
    captured = capture(site.url("/missing.html"))
    assert captured.page.status == 200
    assert captured.report.outcome.status == "failed"
    assert captured.report.outcome.reason == "not-found"
    assert "HTTP Error 404" in (captured.report.outcome.message or "")
    assert captured.report.artifacts == ()
    assert "/missing.mp4" in {urlsplit(r.header("WARC-Target-URI") or "").path
                              for r in _records(captured, "response")}
    _judged(captured, site)


def test_post_answering_410_is_removed(site: Any, capture: Callable[..., Any]) -> None:
    """A 410 post: the page shows 410 and the media outcome is removed (target.gone)."""
    captured = capture(site.url("/gone.html"))
    assert captured.page.status == 410
    assert captured.report.outcome.status == "failed"
    assert captured.report.outcome.reason == "removed"
    _judged(captured, site)


def test_page_without_media_is_none(site: Any, capture: Callable[..., Any]) -> None:
    """A page with nothing to download: outcome none, no problem, no artifact."""
    captured = capture(site.url("/text.html"))
    assert captured.report.outcome.status == "none"
    assert captured.report.outcome.reason is None
    assert captured.report.summary["problems"] == []
    assert captured.report.artifacts == ()
    _judged(captured, site)


def test_video_past_max_media_bytes_is_too_large_and_nothing_is_sealed(
    site: Any, capture: Callable[..., Any]
) -> None:
    """With capture.max_media_bytes below the video's size: outcome too-large, the WARC
    holds the truncated response, and no media file becomes an artifact."""
    captured = capture(site.url("/video.html"), max_media_bytes=10_000)
    assert captured.report.outcome.status == "failed"
    assert captured.report.outcome.reason == "too-large"
    assert _media(captured) == []
    clip = [r for r in _records(captured, "response")
            if r.header("WARC-Target-URI") == site.url("/clip.mp4")]
    # the page fetcher's own subresource copy is whole; yt-dlp's is cut at the limit
    assert [r.header("WARC-Truncated") for r in clip] == [None, "length"]
    assert not list(captured.workdir.rglob("*.mp4"))  # no .part promoted to a file
    _judged(captured, site)


def test_stream_that_needs_ffmpegs_own_downloader_is_refused_not_fetched(
    site: Any, capture: Callable[..., Any]
) -> None:
    """HLS yt-dlp cannot decrypt hands the stream to ffmpeg's network downloader; ffmpeg
    may read local files only, so no segment is fetched and the item fails."""
    captured = capture(site.url("/locked.html"))
    assert captured.report.outcome.status == "failed"
    assert captured.report.outcome.reason == "unsupported"
    assert any("delegated to ffmpeg" in w for w in captured.report.provenance["warnings"])
    assert _media(captured) == []
    seen = site.seen()
    assert not [path for _m, path, _a in seen if path.startswith("/hls/seg")]
    assert not [agent for _m, _p, agent in seen if agent.startswith("Lavf")]
    _judged(captured, site)


def test_refused_address_is_never_fetched(site: Any, tmp_path: Path) -> None:
    """With private networks not allowed, a media URL on 127.0.0.1 is refused by the
    guard before any connection: the server sees no request; the outcome says refused."""
    url = site.url("/clip.mp4")
    page = PageCapture(
        requested_url=url, final_url=url, status=200, peer_ip="203.0.113.7", peer_port=80,
        tls_certificate_sha256=None, tls_chain_pem=None, redirects=(),
        content_type="video/mp4", links=(), subresources_fetched=0,
        response_record_id="<urn:uuid:00000000-0000-0000-0000-000000000001>",
        body_deferred=True,
    )
    with open_session(tmp_path / "c.warc.gz", options=RecorderOptions(timeout_seconds=20),
                      warcinfo={"software": "test"}) as session:
        report = MediaFetcher(MediaOptions()).run(session, page, tmp_path)
        session.publish()
    assert report.outcome.status == "failed"
    assert report.outcome.reason == "refused"
    assert report.artifacts == ()
    assert site.seen() == []


def test_media_disabled_still_downloads_a_direct_video(
    site: Any, capture: Callable[..., Any]
) -> None:
    """media.enabled = false: no yt-dlp, but a URL that is itself a video is downloaded
    (the page fetcher left its body to the media fetcher); an HTML page is skipped."""
    direct = capture(site.url("/clip.mp4"), options=MediaOptions(enabled=False))
    assert direct.report.outcome.status == "ok"
    (video,) = _media(direct)
    assert video.digest.sha256 == site.sha256("/clip.mp4")
    assert direct.report.provenance["used_yt_dlp"] is False
    site.clear()
    page = capture(site.url("/video.html"), options=MediaOptions(enabled=False))
    assert page.report.outcome.status == "skipped"
    assert page.report.artifacts == ()


def test_max_items_limits_a_gallery(site: Any, capture: Callable[..., Any]) -> None:
    """media.max_items bounds how many items one post yields."""
    captured = capture(site.url("/gallery.html"), options=MediaOptions(max_items=2))
    assert [a.name for a in _media(captured)] == ["media-photo1.png", "media-photo2.png"]


def test_the_recorder_is_the_only_request_handler(tmp_path: Path) -> None:
    """A RecordingYoutubeDL's director holds our handler alone: urllib, requests,
    websockets and curl_cffi (registered globally by yt-dlp) cannot send anything."""
    with open_session(tmp_path / "c.warc.gz", options=RecorderOptions(),
                      warcinfo={"software": "test"}) as session:
        traffic = MediaTraffic(session, deadline=Deadline(10), workdir=tmp_path)
        with RecordingYoutubeDL({"quiet": True}, traffic=traffic) as ydl:
            assert list(ydl._request_director.handlers) == ["Recorder"]
        traffic.close()


def test_a_video_the_browser_hands_on_is_fetched_and_stored_once(
    site: Any, tmp_path: Path
) -> None:
    """The page's <video> is found by yt-dlp's extractor and handed on by the browser
    too: the URL is not fetched a second time for media, one artifact holds it, and the
    manifest says which route was folded into which item."""
    warc = tmp_path / "capture.warc.gz"
    with open_session(warc, options=RecorderOptions(allow_private_networks=True,
                                                    timeout_seconds=60.0),
                      warcinfo={"software": "test"}) as session:
        # as in an archive with media on: the page fetcher leaves the <video> to media
        page = capture_page(session, site.url("/video.html"), defer_media=True)
        session.add_discovered_media(site.url("/clip.mp4"))  # what the browser does
        report = MediaFetcher(MediaOptions(frame_samples=0)).run(session, page, tmp_path)
        session.publish()
    captured = type("C", (), {"warc": warc, "report": report, "page": page})
    assert report.outcome.status == "ok", report.outcome
    (video,) = _media(captured)
    assert video.digest.sha256 == site.sha256("/clip.mp4")
    assert [d["url"] for d in report.summary["deduplicated"]] == [site.url("/clip.mp4")]
    assert report.summary["deduplicated"][0]["route"] == "browser"
    gets = [path for method, path, _ua in site.seen() if method == "GET"]
    assert gets.count("/clip.mp4") == 1
    _judged(captured, site)


def test_a_relative_thumbnail_is_resolved_against_the_page(
    site: Any, capture: Callable[..., Any]
) -> None:
    """og:image '/img/2.png' (relative, as the generic extractor reports it): the
    thumbnail is fetched from the page's host and kept; the video is captured."""
    captured = capture(site.url("/og-post.html"))
    assert captured.report.outcome.status == "ok", captured.report.outcome
    (video,) = _media(captured)
    assert video.digest.sha256 == site.sha256("/clip.mp4")
    thumbnails = [a for a in captured.report.artifacts if ".thumbnail." in a.name]
    assert [a.digest.sha256 for a in thumbnails] == [site.sha256("/img/2.png")]
    _judged(captured, site)


def test_a_thumbnail_that_is_no_web_url_is_left_out_with_a_warning(
    site: Any, capture: Callable[..., Any]
) -> None:
    """og:image 'javascript:alert(1)': left out, said in the warnings; the video is
    captured all the same (before, the whole media step failed on it)."""
    captured = capture(site.url("/og-bad.html"))
    assert captured.report.outcome.status == "ok", captured.report.outcome
    (video,) = _media(captured)
    assert video.digest.sha256 == site.sha256("/clip.mp4")
    assert not [a for a in captured.report.artifacts if ".thumbnail." in a.name]
    assert any("thumbnail URL 'javascript:alert(1)'" in w and "left out" in w
               for w in captured.report.provenance["warnings"])


def test_the_same_image_at_two_addresses_is_stored_once(
    site: Any, capture: Callable[..., Any]
) -> None:
    """Two <img> with the same bytes: one media artifact; the second address is noted as
    the same as the first in the manifest."""
    captured = capture(site.url("/twice.html"))
    assert captured.report.outcome.status == "ok", captured.report.outcome
    (image,) = _media(captured)
    assert image.digest.sha256 == site.sha256("/photo1.png")
    (same,) = captured.report.summary["deduplicated"]
    assert same["url"] == site.url("/copy/photo1.png")
    assert same["same_as"] == image.name
    _judged(captured, site)


def _only_127_0_0_1(address: IPAddress) -> str | None:
    """127.0.0.1 (the media site) counts as public; everything else as the guard says."""
    return None if address == ipaddress.IPv4Address("127.0.0.1") else non_global_reason(address)


def test_a_refused_video_next_to_a_good_one_costs_only_itself(
    site: Any, capture: Callable[..., Any]
) -> None:
    """A page's <video> at the metadata address is refused by the guard (counted and
    explained); the good video and the image beside it are still captured, and the
    outcome is partial/refused, not failed."""
    captured = capture(site.url("/mixed.html"), allow_private_networks=False,
                       address_policy=_only_127_0_0_1)
    outcome = captured.report.outcome
    assert (outcome.status, outcome.reason) == ("partial", "refused"), outcome.message
    assert "2 media item(s) captured" in str(outcome.message)
    assert "1 media URL(s) refused" in str(outcome.message)
    assert "169.254.169.254 is the cloud metadata address" in str(outcome.message)
    assert captured.report.summary["refused"]["count"] == 1
    kinds = sorted(item["kind"] for item in captured.report.summary["items"])
    assert kinds == ["image", "video"]
    assert {p["reason"] for p in captured.report.summary["problems"]} == {"refused"}
    assert not any("169.254.169.254" in (r.header("WARC-Target-URI") or "")
                   for r in read_records(captured.warc))
    _judged(captured, site)
