"""Fixtures for the media tests: media made by ffmpeg, served on 127.0.0.1 (port 0), and
a helper that records a page plus the media fetcher into one WARC.

The media site logs every request it receives, so a test can prove that nothing was
fetched behind the recorder's back: every request the server saw is a request record
of the WARC.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from archiver.capture.fetcher import FetcherReport
from archiver.capture.media import MediaFetcher, MediaOptions
from archiver.capture.page import PageCapture, capture_page
from archiver.recorder import RecorderOptions, open_session
from archiver.recorder.addresses import AddressPolicy, non_global_reason

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
# 64 KiB of noise: repeats only beyond gzip's 32 KiB window, so the WARC cannot shrink it
BIG_BLOCK = random.Random(7).randbytes(64 * 1024)


def _ffmpeg(*args: str) -> None:
    if not Path(FFMPEG).exists():
        pytest.fail("ffmpeg is not installed: .ci/run installs it (apt-get install ffmpeg)")
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", *args], check=True,
                   capture_output=True, timeout=120)


@dataclass(frozen=True)
class Route:
    status: str
    content_type: str
    file: Path | None = None
    body: bytes = b""
    stream_bytes: int = 0  # > 0: head, then BIG_BLOCK repeated, cut at this many bytes
    head: bytes = b""

    def with_head(self, head: str) -> Route:
        """This HTML page with ``head`` added inside its <head>."""
        return Route(self.status, self.content_type, self.file,
                     self.body.replace(b"</head>", head.encode() + b"</head>", 1))


@dataclass
class MediaSite:
    base: str
    directory: Path
    routes: dict[str, Route]
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, UA
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base + path

    def served(self, path: str) -> bytes:
        route = self.routes[path]
        return route.file.read_bytes() if route.file is not None else route.body

    def sha256(self, path: str) -> str:
        return hashlib.sha256(self.served(path)).hexdigest()

    def seen(self) -> list[tuple[str, str, str]]:
        with self.lock:
            return list(self.requests)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


def big_sha256(size: int, head: bytes = b"") -> str:
    """SHA-256 of the ``stream_bytes`` body of that size (after ``head``)."""
    digest = hashlib.sha256(head[:size])
    left = size - len(head[:size])
    while left:
        piece = BIG_BLOCK[: min(left, len(BIG_BLOCK))]
        digest.update(piece)
        left -= len(piece)
    return digest.hexdigest()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def _serve(self, *, with_body: bool) -> None:
        self.close_connection = True
        site = self.server.site
        path = self.path.split("?", 1)[0]
        with site.lock:
            site.requests.append((self.command, path, self.headers.get("User-Agent", "")))
        route = site.routes.get(path) or Route("404 Not Found", "text/plain", body=b"no\n")
        if route.file is not None:
            size = route.file.stat().st_size
        elif route.stream_bytes:
            size = route.stream_bytes
        else:
            size = len(route.body)
        head = (f"HTTP/1.1 {route.status}\r\nContent-Type: {route.content_type}\r\n"
                f"Content-Length: {size}\r\nConnection: close\r\n\r\n")
        try:
            self.wfile.write(head.encode("latin-1"))
            if not with_body:
                return
            if route.file is not None:
                with route.file.open("rb") as handle:
                    shutil.copyfileobj(handle, self.wfile, 256 * 1024)
            elif route.stream_bytes:
                self.wfile.write(route.head[: route.stream_bytes])
                left = route.stream_bytes - len(route.head[: route.stream_bytes])
                while left:
                    piece = BIG_BLOCK[: min(left, len(BIG_BLOCK))]
                    self.wfile.write(piece)
                    left -= len(piece)
            else:
                self.wfile.write(route.body)
        except (ConnectionError, TimeoutError):
            return  # the client stopped reading: a limit, or a probe it cut short

    def log_message(self, format: str, *args: object) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], site: MediaSite) -> None:
        super().__init__(address, _Handler)
        self.site = site


SUBTITLES = b"WEBVTT\n\n00:00.000 --> 00:01.500\nThe words spoken in the video.\n"


def _make_media(d: Path) -> dict[str, Route]:
    _ffmpeg("-f", "lavfi", "-i", "testsrc=duration=2:size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
            "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", str(d / "clip.mp4"))
    (d / "hls").mkdir()
    _ffmpeg("-i", str(d / "clip.mp4"), "-c", "copy", "-f", "hls", "-hls_time", "1",
            "-hls_playlist_type", "vod", "-hls_segment_filename", str(d / "hls" / "seg%03d.ts"),
            str(d / "hls" / "index.m3u8"))
    # The same stream encrypted with AES-128 (the key served at /aes/key.bin), as
    # platforms commonly serve HLS: yt-dlp decrypts it natively with pycryptodomex.
    (d / "aes").mkdir()
    (d / "aes" / "key.bin").write_bytes(bytes(range(16)))
    (d / "aes" / "keyinfo").write_text(f"/aes/key.bin\n{d / 'aes' / 'key.bin'}\n")
    _ffmpeg("-i", str(d / "clip.mp4"), "-c", "copy", "-f", "hls", "-hls_time", "1",
            "-hls_playlist_type", "vod", "-hls_key_info_file", str(d / "aes" / "keyinfo"),
            "-hls_segment_filename", str(d / "aes" / "seg%03d.ts"),
            str(d / "aes" / "index.m3u8"))
    (d / "dash").mkdir()
    _ffmpeg("-i", str(d / "clip.mp4"), "-c", "copy", "-f", "dash", "-seg_duration", "1",
            "-use_template", "1", "-use_timeline", "1", str(d / "dash" / "manifest.mpd"))
    sources = ("testsrc2=size=480x360", "mandelbrot=size=480x360", "smptehdbars=size=480x360")
    for i, source in enumerate(sources, 1):
        _ffmpeg("-f", "lavfi", "-i", source, "-frames:v", "1", str(d / f"photo{i}.png"))
    _ffmpeg("-i", str(d / "photo2.png"), "-vf", "scale=360:270", "-q:v", "20",
            str(d / "photo2-reencoded.jpg"))
    _ffmpeg("-f", "lavfi", "-i", "color=c=red:size=16x16", "-frames:v", "1",
            str(d / "icon.png"))

    def page(body: str) -> Route:
        html = f"<!DOCTYPE html><html><head><title>Post</title></head><body>{body}</body></html>"
        return Route("200 OK", "text/html; charset=utf-8", body=html.encode())

    routes = {
        "/clip.mp4": Route("200 OK", "video/mp4", d / "clip.mp4"),
        "/video.html": page('<h1>A post</h1><video controls>'
                            '<source src="/clip.mp4" type="video/mp4">'
                            '<track kind="subtitles" src="/subs.vtt" srclang="en"></video>'),
        "/subs.vtt": Route("200 OK", "text/vtt", body=SUBTITLES),
        "/hls.html": page('<video controls src="/hls/index.m3u8"></video>'),
        "/dash/manifest.mpd": Route("200 OK", "application/dash+xml",
                                    d / "dash" / "manifest.mpd"),
        "/gallery.html": page('<img src="/icon.png" alt="logo"><p>Three photos</p>'
                              '<img src="/photo1.png"><img src="/photo2.png">'
                              '<img src="/photo3.png"><img src="/missing-photo.png">'),
        "/missing.html": page('<video controls><source src="/missing.mp4" '
                              'type="video/mp4"></video>'),
        "/gone.html": Route("410 Gone", "text/html",
                            body=b"<h1>This post was removed by the platform</h1>"),
        "/text.html": page("<p>Only words here.</p>"),
        "/photo2-reencoded.jpg": Route("200 OK", "image/jpeg", d / "photo2-reencoded.jpg"),
        "/icon.png": Route("200 OK", "image/png", d / "icon.png"),
        # A real MPEG-TS segment, then noise: media by its bytes (ffprobe finds the
        # video stream at the start), and 200 MB that the WARC cannot compress.
        "/big.mp4": Route("200 OK", "video/mp4", stream_bytes=200 * 1024 * 1024,
                          head=(d / "hls" / "seg000.ts").read_bytes()),
        # og:image with a relative URL (the generic extractor reports it as given), and
        # one that is no http(s) URL at all: neither may cost the post its video.
        "/og-post.html": page('<video controls src="/clip.mp4"></video>').with_head(
                                  '<meta property="og:image" content="/img/2.png">'),
        "/og-bad.html": page('<video controls src="/clip.mp4"></video>').with_head(
            '<meta property="og:image" content="javascript:alert(1)">'),
        "/img/2.png": Route("200 OK", "image/png", d / "photo2.png"),
        # The same photo at two addresses: stored once.
        "/twice.html": page('<img src="/photo1.png"><img src="/copy/photo1.png">'),
        "/copy/photo1.png": Route("200 OK", "image/png", d / "photo1.png"),
        # A good video next to one at the cloud metadata address (refused by the guard).
        "/mixed.html": page('<video controls src="http://169.254.169.254/x.mp4"></video>'
                            '<video controls src="/clip.mp4"></video>'
                            '<img src="/photo1.png">'),
    }
    for i in (1, 2, 3):
        routes[f"/photo{i}.png"] = Route("200 OK", "image/png", d / f"photo{i}.png")
    # A stream yt-dlp cannot decrypt itself: it hands it to ffmpeg's own downloader,
    # which must not be able to fetch anything.
    playlist = (d / "hls" / "index.m3u8").read_text()
    locked = playlist.replace("#EXTINF", '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="/key.bin"\n#EXTINF',
                              1).replace("seg", "/hls/seg")
    routes["/locked/index.m3u8"] = Route("200 OK", "application/vnd.apple.mpegurl",
                                         body=locked.encode())
    routes["/locked.html"] = page('<video controls src="/locked/index.m3u8"></video>')
    routes["/hls/index.m3u8"] = Route("200 OK", "application/vnd.apple.mpegurl",
                                      d / "hls" / "index.m3u8")
    for segment in sorted((d / "hls").glob("*.ts")):
        routes[f"/hls/{segment.name}"] = Route("200 OK", "video/mp2t", segment)
    routes["/aes.html"] = page('<video controls src="/aes/index.m3u8"></video>')
    routes["/aes/index.m3u8"] = Route("200 OK", "application/vnd.apple.mpegurl",
                                      d / "aes" / "index.m3u8")
    routes["/aes/key.bin"] = Route("200 OK", "application/octet-stream", d / "aes" / "key.bin")
    for segment in sorted((d / "aes").glob("*.ts")):
        routes[f"/aes/{segment.name}"] = Route("200 OK", "video/mp2t", segment)
    for chunk in sorted((d / "dash").glob("*.m4s")):
        routes[f"/dash/{chunk.name}"] = Route("200 OK", "video/iso.segment", chunk)
    return routes


def _serve(address: str, directory: Path, routes: dict[str, Route]) -> Iterator[MediaSite]:
    site = MediaSite("", directory, routes)
    server = _Server((address, 0), site)
    site.base = f"http://{address}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Route]]:
    """The media, made once per session by ffmpeg."""
    directory = tmp_path_factory.mktemp("media-site")
    return directory, _make_media(directory)


@pytest.fixture(scope="session")
def media_site(media_files: tuple[Path, dict[str, Route]]) -> Iterator[MediaSite]:
    """The media site on 127.0.0.1 (its request log is cleared before each use)."""
    yield from _serve("127.0.0.1", *media_files)


@pytest.fixture
def site(media_site: MediaSite) -> MediaSite:
    """The media site with an empty request log."""
    media_site.clear()
    return media_site


@dataclass
class Captured:
    page: PageCapture
    report: FetcherReport
    warc: Path
    workdir: Path


def record(url: str, tmp_path: Path, *, options: MediaOptions | None = None,
           address_policy: AddressPolicy = non_global_reason, **recorder: object) -> Captured:
    """The page, then the media fetcher, into one WARC (published); ``address_policy``
    decides what the guard refuses when ``allow_private_networks`` is False."""
    values: dict[str, object] = {"allow_private_networks": True, "timeout_seconds": 60.0}
    values.update(recorder)
    workdir = Path(tempfile.mkdtemp(prefix="work-", dir=tmp_path))
    warc = workdir / "capture.warc.gz"
    with open_session(warc, options=RecorderOptions(**values),  # type: ignore[arg-type]
                      warcinfo={"software": "evidence-archiver/test"},
                      address_policy=address_policy) as session:
        page = capture_page(session, url)
        report = MediaFetcher(options or MediaOptions(frame_samples=3)).run(
            session, page, workdir)
        session.publish()
    return Captured(page, report, warc, workdir)


@pytest.fixture(scope="session")
def big_digest() -> Callable[[int], str]:
    """``big_digest(size)``: SHA-256 of the streamed body of that size."""
    return big_sha256


@pytest.fixture
def capture(tmp_path: Path) -> Callable[..., Captured]:
    """``capture(url, options=..., **recorder_options)``: see :func:`record`."""
    return lambda url, **kw: record(url, tmp_path, **kw)
