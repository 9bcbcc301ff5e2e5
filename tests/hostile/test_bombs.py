"""Hostile family "bombs": bodies whose Content-Encoding inflates a few kilobytes into
gigabytes, served as an image, a page, a video, in every coding a server can send.

The rule: the WARC keeps the bytes as received (they are the evidence), and whatever is
decoded (media files, link extraction, the browser's copy, hashing) stops at
``capture.max_decoded_bytes`` or ``capture.max_decode_ratio``; the media outcome names
the limit (``decoded-size-limit``) and nothing decoded from a bomb becomes an artifact.
Each case records the URL with the page and media fetchers (real HTTP on 127.0.0.1,
real yt-dlp) and checks the outcome, the WARC record, and what is left on disk.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from encoded_site import (
    Body,
    brotli_bomb,
    brotli_compress,
    deflate_bomb,
    files_under,
    gzip_bomb,
    gzip_members,
    record,
    response_payloads,
    serve,
)
from PIL import Image

from archiver.capture.browser import BrowserFetcher, BrowserOptions
from archiver.capture.media import MediaOptions, phash
from archiver.capture.page import capture_page
from archiver.recorder import RecorderOptions, open_session

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
MiB = 1024 * 1024
BOMB = 16 * MiB  # zeros behind each bomb: 16 KiB or so on the wire
DISK_BOUND = 8 * MiB
"""What a bomb case may leave in the capture's directory, WARC included: the decoded
copy stops near 100 x the bytes received (a few MiB here), and is deleted."""


def _png() -> bytes:
    rng = random.Random(3)
    image = Image.new("RGB", (160, 120))
    image.putdata([(rng.randrange(256), rng.randrange(256), 0) for _ in range(160 * 120)])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


PNG = _png()
# Text that compresses about 2:1: under the ratio, so only max_decoded_bytes stops it.
HEX = random.Random(5).randbytes(MiB // 2).hex().encode()


@dataclass(frozen=True)
class Case:
    name: str
    body: Body
    status: str
    reason: str | None
    says: str  # in the outcome's message
    recorder: tuple[tuple[str, object], ...] = ()


CASES = [
    Case("gzip bomb as image/png", Body("image/png", gzip_bomb(BOMB), "gzip"),
         "failed", "decoded-size-limit", "capture.max_decode_ratio"),
    Case("deflate bomb as image/png", Body("image/png", deflate_bomb(BOMB), "deflate"),
         "failed", "decoded-size-limit", "capture.max_decode_ratio"),
    Case("gzip bomb as video/mp4", Body("video/mp4", gzip_bomb(BOMB), "gzip"),
         "failed", "decoded-size-limit", "capture.max_decode_ratio"),
    Case("gzip bomb as text/html (yt-dlp's generic extractor)",
         Body("text/html", gzip_bomb(BOMB), "gzip"),
         "failed", "decoded-size-limit", "capture.max_decode_ratio"),
    Case("x-gzip bomb as octet-stream", Body("application/octet-stream", gzip_bomb(BOMB),
                                             "x-gzip"),
         "failed", "decoded-size-limit", "capture.max_decode_ratio"),
    Case("64 concatenated gzip members", Body("image/png", gzip_members(64, MiB // 4), "gzip"),
         "failed", "decoded-size-limit", "capture.max_decode_ratio"),
    # Codings the archive does not decode (never asked for): recorded, never decoded,
    # a reason of their own naming the coding, through the direct download (image/png)
    # and through yt-dlp (video/mp4).
    Case("brotli bomb (never asked for, never decoded)",
         Body("image/png", brotli_bomb(BOMB), "br"), "failed", "unsupported-encoding",
         "Content-Encoding 'br' is not one the archive decodes"),
    Case("brotli bomb as video/mp4 (yt-dlp)",
         Body("video/mp4", brotli_bomb(BOMB), "br"), "failed", "unsupported-encoding",
         "Content-Encoding 'br' is not one the archive decodes"),
    Case("a real PNG in brotli", Body("image/png", brotli_compress(PNG), "br"),
         "failed", "unsupported-encoding", "Content-Encoding 'br' is not one"),
    Case("nested gzip, gzip",
         Body("image/png", gzip.compress(gzip_bomb(BOMB), mtime=0), "gzip, gzip"),
         "failed", "unsupported-encoding",
         "Content-Encoding 'gzip, gzip' is not one the archive decodes"),
    Case("nested gzip, gzip as video/mp4 (yt-dlp)",
         Body("video/mp4", gzip.compress(gzip_bomb(BOMB), mtime=0), "gzip, gzip"),
         "failed", "unsupported-encoding", "Content-Encoding 'gzip, gzip' is not one"),
    Case("gzip, br", Body("image/png", brotli_compress(gzip.compress(PNG, mtime=0)),
                          "gzip, br"),
         "failed", "unsupported-encoding", "Content-Encoding 'gzip, br' is not one"),
    Case("an unknown coding (zstd)", Body("image/png", PNG, "zstd"),
         "failed", "unsupported-encoding", "Content-Encoding 'zstd' is not one"),
    Case("under the ratio, over max_decoded_bytes",
         Body("image/png", gzip.compress(HEX, mtime=0), "gzip"),
         "failed", "decoded-size-limit", "capture.max_decoded_bytes",
         recorder=(("max_decoded_bytes", 256 * 1024),)),
]


@pytest.mark.hostile("bombs")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bomb_is_recorded_as_received_and_never_decoded_whole(
        case: Case, tmp_path: Path) -> None:
    """The outcome names the limit, no media artifact, the WARC holds the encoded
    bytes exactly as sent, and the capture's disk use stays small."""
    with serve({"/bomb": case.body}) as site:
        url = site.url("/bomb")
        captured = record(url, tmp_path, **dict(case.recorder))
    outcome = captured.report.outcome
    assert (outcome.status, outcome.reason) == (case.status, case.reason), outcome
    assert case.says in (outcome.message or "")
    assert captured.media_artifacts == []
    payloads = response_payloads(captured.warc, url)
    # Complete once (the media fetch); the page fetch, which stops after the headers
    # of an image or video, keeps a truncated prefix.
    assert case.body.body in payloads
    assert all(case.body.body.startswith(p) for p in payloads)
    assert files_under(captured.workdir) < DISK_BOUND


@pytest.mark.hostile("bombs")
def test_a_bomb_page_is_parsed_for_links_only_up_to_the_ratio(tmp_path: Path) -> None:
    """The page fetcher's link extraction stops at the ratio too, and says so."""
    with serve({"/page": Body("text/html", gzip_bomb(BOMB), "gzip")}) as site:
        captured = record(site.url("/page"), tmp_path)
    assert any("link extraction" in w and "capture.max_decode_ratio" in w
               for w in captured.warnings), captured.warnings


@pytest.mark.hostile("bombs")
def test_a_bomb_among_a_pages_images_is_left_out_with_the_limit_named(
        tmp_path: Path) -> None:
    """An <img> that is a bomb: not an item, and the report's warning names the limit."""
    routes = {
        "/post": Body("text/html", b'<html><body><img src="/bomb.png"></body></html>'),
        "/bomb.png": Body("image/png", gzip_bomb(BOMB), "gzip"),
    }
    with serve(routes) as site:
        captured = record(site.url("/post"), tmp_path)
    assert captured.media_artifacts == []
    warnings = captured.report.provenance["warnings"]
    assert any("bomb.png" in w and "capture.max_decode_ratio" in w for w in warnings), warnings
    assert files_under(captured.workdir) < DISK_BOUND


@pytest.mark.hostile("bombs")
def test_an_encoded_image_within_the_limits_is_kept_decoded(tmp_path: Path) -> None:
    """The control: a real PNG sent gzip-encoded is decoded and kept, byte for byte."""
    with serve({"/photo.png": Body("image/png", gzip.compress(PNG, mtime=0), "gzip")}) as site:
        captured = record(site.url("/photo.png"), tmp_path)
    assert captured.report.outcome.status == "ok", captured.report.outcome
    (artifact,) = [a for a in captured.report.artifacts if a.role == "media"]
    assert artifact.path.read_bytes() == PNG
    assert captured.report.summary["items"][0]["kind"] == "image"


@pytest.fixture(scope="module")
def frame_bomb(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real two-second video whose frames are 4000x4000 at 16 bits per channel: 600 KB
    of PNG-coded Matroska that takes 128 MB per decoded frame."""
    path = tmp_path_factory.mktemp("frame-bomb") / "bomb.mkv"
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "color=c=blue:size=4000x4000:rate=1", "-frames:v", "2", "-c:v", "png",
                    "-pix_fmt", "rgba64be", "-y", str(path)],
                   check=True, capture_output=True, timeout=300)
    return path.read_bytes()


@pytest.mark.hostile("bombs")
def test_a_video_that_decodes_huge_is_kept_but_its_hashing_stops_at_the_tool_limit(
        tmp_path: Path, frame_bomb: bytes) -> None:
    """The video is media (kept as received); ffmpeg sampling its frames runs out of
    media.tool_memory_mib and the report says so, instead of the machine's memory."""
    with serve({"/v.mkv": Body("video/x-matroska", frame_bomb)}) as site:
        captured = record(site.url("/v.mkv"), tmp_path,
                          media=MediaOptions(frame_samples=2, tool_memory_mib=400))
    assert captured.report.outcome.status == "ok", captured.report.outcome
    (item,) = captured.report.summary["items"]
    assert (item["kind"], item["pdq"]) == ("video", [])
    warnings = captured.report.provenance["warnings"]
    assert any("ran out of its 400 MiB (media.tool_memory_mib)" in w for w in warnings), \
        warnings


@pytest.mark.hostile("bombs")
def test_the_browser_is_never_handed_a_bomb(tmp_path: Path) -> None:
    """A page whose image and script are gzip bombs: Chromium is not given them (notes
    of kind decoded-size-limit), the view is still taken, the WARC keeps them encoded."""
    routes = {
        "/post": Body("text/html", b'<html><body><p>words</p><img src="/bomb.png">'
                                   b'<script src="/bomb.js"></script></body></html>'),
        "/bomb.png": Body("image/png", gzip_bomb(BOMB), "gzip"),
        "/bomb.js": Body("text/javascript", gzip_bomb(BOMB // 2), "gzip"),  # not a revisit
    }
    browser = BrowserFetcher(BrowserOptions(
        timeout_seconds=30.0, network_idle_seconds=2.0, request_timeout_seconds=5.0,
        max_scrolls=0, pdf=False))
    try:
        with serve(routes) as site, open_session(
                tmp_path / "c.warc.gz", warcinfo={"software": "test"},
                options=RecorderOptions(allow_private_networks=True,
                                        fetch_subresources=False)) as session:
            page = capture_page(session, site.url("/post"))
            report = browser.run(session, page, tmp_path)
            session.publish()
    finally:
        browser.close()
    notes = {n["url"]: n for n in report.provenance["notes"]}
    for path in ("/bomb.png", "/bomb.js"):
        assert notes[site.url(path)]["kind"] == "decoded-size-limit", notes
        assert "capture.max_decode_ratio" in notes[site.url(path)]["detail"]
        assert response_payloads(tmp_path / "c.warc.gz", site.url(path)) == [
            routes[path].body]
    assert report.outcome.status == "partial", report.outcome
    assert report.provenance["not_recorded"] == {"decoded-size-limit": 2}


MEMORY_HOG = (b"<html><body><p>words</p><script>const kept = [];"
              b"for (let i = 0; i < 60; i++) kept.push(new Uint8Array(50e6).fill(i + 1));"
              b"</script></body></html>")


@pytest.mark.hostile("bombs")
def test_a_chromium_past_kill_memory_mib_is_killed_under_its_capture(tmp_path: Path) -> None:
    """A page whose script fills 3 GB: the watchdog kills Chromium in the middle of the
    capture (not only between captures); the browser view fails with reason
    browser-memory naming the setting, and the next capture gets a new Chromium."""
    browser = BrowserFetcher(BrowserOptions(
        timeout_seconds=60.0, network_idle_seconds=2.0, request_timeout_seconds=5.0,
        max_scrolls=0, pdf=False, kill_memory_mib=1500))
    routes = {"/hog": Body("text/html", MEMORY_HOG),
              "/calm": Body("text/html", b"<html><body><p>calm</p></body></html>")}
    try:
        with serve(routes) as site:
            reports = []
            for path in ("/hog", "/calm"):
                warc = tmp_path / f"{path.strip('/')}.warc.gz"
                with open_session(warc, warcinfo={"software": "test"},
                                  options=RecorderOptions(allow_private_networks=True)
                                  ) as session:
                    page = capture_page(session, site.url(path))
                    reports.append(browser.run(session, page, tmp_path))
                    session.publish()
        restarts = dict(browser.service.restarts)
    finally:
        browser.close()
    hog, calm = reports
    assert (hog.outcome.status, hog.outcome.reason) == ("failed", "browser-memory"), \
        hog.outcome
    assert "browser.kill_memory_mib (1500 MiB)" in (hog.outcome.message or "")
    assert calm.outcome.status == "ok", calm.outcome
    assert restarts == {"memory-kill": 1}


PIXEL_CHILD = """
import json, sys
from pathlib import Path
from archiver.capture.media import phash
found = phash.image_hash(Path(sys.argv[1]))
print(json.dumps({"pdq": found.pdq, "peak_rss_kib": next(
    int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))}))
"""


@pytest.mark.hostile("bombs")
def test_a_pixel_bomb_is_hashed_without_decoding_it_in_the_capture_process(
        tmp_path: Path) -> None:
    """A 200 KB PNG of 8000x8000 pixels (half a gigabyte decoded): its PDQ hash is made
    from ffmpeg's reduced copy, so the hashing process stays small; the hash is that of
    the same picture reduced beforehand."""
    path = tmp_path / "pixels.png"
    picture = Image.effect_mandelbrot((8000, 8000), (-2.0, -1.2, 1.0, 1.2), 30)
    picture.save(path)
    small = tmp_path / "small.png"
    picture.resize((1000, 1000)).save(small)
    del picture
    done = subprocess.run([sys.executable, "-c", PIXEL_CHILD, str(path)], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["peak_rss_kib"] < 250 * 1024, result
    assert phash.distances([result["pdq"]], [phash.image_hash(small).pdq])[0, 0] <= 8
