"""The media fetcher: a post's videos (yt-dlp) and images, into the capture's WARC.

What it does, after the page fetcher (see :func:`MediaFetcher.run`):

1. A URL that is itself a video, audio file or image (the page fetcher read only its
   headers, ``PageCapture.body_deferred``) is downloaded once, as media.
2. yt-dlp runs on the URL (and on media URLs another fetcher discovered, e.g. the
   browser's ``<video>`` sources) when the page is HTML, a video, an HLS/DASH manifest,
   or a URL one of yt-dlp's site extractors claims. Every request it makes goes through
   :mod:`archiver.capture.media.handler`, i.e. through the recorder. yt-dlp's native HLS/DASH
   downloaders are forced; ffmpeg only merges and remuxes files already downloaded.
3. The page's ``<img>`` images, at least ``min_image_side`` pixels each way, are
   fetched as media too (yt-dlp does not look at images).

Each final file (after yt-dlp's merge or fixup) becomes an artifact of role ``media``
and a record of the WARC: a ``resource`` record when its bytes are exactly one recorded
response's entity body (``WARC-Refers-To`` that response), else a ``conversion`` record
(merged, remuxed, concatenated from HLS/DASH segments; ``WARC-Refers-To`` the response
of the playlist, manifest or format URL; every segment's response is in the WARC).
yt-dlp's ``.info.json``, subtitles and thumbnails are artifacts of role ``metadata``.
Partial files (``.part``, fragments) are never artifacts: only files yt-dlp reports
finished (its ``after_move`` stage) are sealed, and only when no error came with them.

Media artifacts carry PDQ perceptual hashes (an image's; a video's sampled frames), in
the manifest under ``happened.fetchers.media.items``, for ``archiver similar``.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from PIL import Image, UnidentifiedImageError
from yt_dlp.extractor import gen_extractor_classes
from yt_dlp.postprocessor.common import PostProcessor
from yt_dlp.utils import YoutubeDLError
from yt_dlp.version import __version__ as YT_DLP_VERSION

from archiver.capture.fetcher import DerivedArtifact, FetcherReport, Outcome
from archiver.capture.media import phash, probe
from archiver.capture.media.handler import MediaTraffic, RecordedBody, RecordingYoutubeDL
from archiver.capture.media.outcomes import classify, is_nothing_found
from archiver.capture.page import PageCapture
from archiver.capture.record import WARC_FILE
from archiver.capture.seal import PROVENANCE_FILE
from archiver.capture.tools import ToolLimits, program_directory
from archiver.errors import CaptureError, ConfigError
from archiver.recorder import RecordingSession
from archiver.recorder.budget import RESOURCES
from archiver.recorder.links import parse_srcset
from archiver.recorder.session import OutgoingRequest
from archiver.recorder.warcfile import warc_digest_hex
from archiver.recorder.wire import Deadline
from archiver.settings import MediaSettings
from chain_of_custody.digest import Digest, Hasher
from chain_of_custody.manifest import MANIFEST_FILE, SIGNATURE_FILE

HTML_TYPES = ("text/html", "application/xhtml+xml")
MANIFEST_TYPES = (
    "application/vnd.apple.mpegurl", "application/x-mpegurl", "audio/mpegurl",
    "audio/x-mpegurl", "application/dash+xml",
)
BINARY_TYPES = ("application/octet-stream", "binary/octet-stream")
# Names other fetchers and the seal use; ours all start with "media-" anyway.
RESERVED_NAMES = frozenset({WARC_FILE, PROVENANCE_FILE, MANIFEST_FILE, SIGNATURE_FILE})
MAX_NAME = 150
MAX_NOTES = 50  # problems and warnings kept in the manifest, each at most 500 characters
MAX_EXAMPLES = 5  # downloads that were not media, listed (all are counted)
PAGE_PARSE_LIMIT = 8 * 1024 * 1024  # bytes of the page scanned for <img>
# Our own table, not the mimetypes module: that reads /etc/mime.types, which differs
# between machines, and the media type is sealed in the manifest.
MEDIA_TYPES = {
    "mp4": "video/mp4", "m4v": "video/mp4", "webm": "video/webm", "mkv": "video/x-matroska",
    "mov": "video/quicktime", "ts": "video/mp2t", "flv": "video/x-flv", "avi": "video/x-msvideo",
    "3gp": "video/3gpp", "ogv": "video/ogg", "m4a": "audio/mp4", "mp3": "audio/mpeg",
    "aac": "audio/aac", "ogg": "audio/ogg", "opus": "audio/ogg", "oga": "audio/ogg",
    "wav": "audio/wav", "flac": "audio/flac", "jpg": "image/jpeg", "jpeg": "image/jpeg",
    "png": "image/png", "gif": "image/gif", "webp": "image/webp", "avif": "image/avif",
    "heic": "image/heic", "bmp": "image/bmp", "svg": "image/svg+xml",
    "vtt": "text/vtt", "srt": "application/x-subrip", "ttml": "application/ttml+xml",
    "ass": "text/x-ssa", "json": "application/json",
}
_EXTENSIONS = {v: k for k, v in reversed(list(MEDIA_TYPES.items()))}
_REASON_ORDER = ("removed", "login-required", "geo-blocked", "too-large",
                 "decoded-size-limit", "unsupported-encoding", "not-media", "not-found",
                 "budget", "timeout", "refused", "tls", "unsupported", "network", "redirects",
                 "error")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaOptions:
    """``media.*`` of the configuration (see :class:`archiver.settings.MediaSettings`)."""

    enabled: bool = True
    timeout_seconds: float = 1800.0
    max_items: int = 20
    cookies_file: Path | None = None
    format: str = "bv*+ba/b"
    write_subtitles: bool = True
    write_thumbnails: bool = True
    frame_samples: int = 8
    images: bool = True
    min_image_side: int = 100
    tool_memory_mib: int = 2048
    tool_timeout_seconds: float = 600.0

    @property
    def tool_limits(self) -> ToolLimits:
        """Limits of every ffmpeg and ffprobe this fetcher (or yt-dlp) starts."""
        return ToolLimits(memory_mib=self.tool_memory_mib, seconds=self.tool_timeout_seconds)

    @classmethod
    def from_settings(cls, settings: MediaSettings) -> MediaOptions:
        """From :class:`~archiver.settings.MediaSettings`. Raises ConfigError when the
        cookies file cannot be read (found now, not in the middle of a capture)."""
        cookies = settings.cookies_file
        if cookies is not None:
            try:
                with Path(cookies).expanduser().open("rb"):
                    pass
            except OSError as exc:
                raise ConfigError(
                    f"media.cookies_file {cookies} cannot be read: {exc.strerror}") from exc
            cookies = Path(cookies).expanduser().resolve()
        return cls(
            enabled=settings.enabled, timeout_seconds=settings.timeout_seconds,
            max_items=settings.max_items, cookies_file=cookies, format=settings.format,
            write_subtitles=settings.write_subtitles,
            write_thumbnails=settings.write_thumbnails,
            frame_samples=settings.frame_samples, images=settings.images,
            min_image_side=settings.min_image_side,
            tool_memory_mib=settings.tool_memory_mib,
            tool_timeout_seconds=settings.tool_timeout_seconds,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled, "timeout_seconds": self.timeout_seconds,
            "max_items": self.max_items,
            "cookies_file": str(self.cookies_file) if self.cookies_file else None,
            "format": self.format, "write_subtitles": self.write_subtitles,
            "write_thumbnails": self.write_thumbnails, "frame_samples": self.frame_samples,
            "images": self.images, "min_image_side": self.min_image_side,
            "tool_memory_mib": self.tool_memory_mib,
            "tool_timeout_seconds": self.tool_timeout_seconds,
        }


class MediaFetcher:
    """The :class:`~archiver.capture.fetcher.Fetcher` for media (name ``media``)."""

    name = "media"

    def __init__(self, options: MediaOptions) -> None:
        self.options = options

    def run(self, session: RecordingSession, page: PageCapture, workdir: Path) -> FetcherReport:
        """Fetch the post's media into ``session``; never raises for the target's
        problems (they are the report's outcome)."""
        directory = workdir / "media"
        directory.mkdir(parents=True, exist_ok=True)
        return _Run(self.options, session, page, directory).execute()


@dataclass(slots=True)
class _Note:
    reason: str
    message: str
    url: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "message": self.message, "url": self.url}


@dataclass(slots=True)
class _Log:
    """yt-dlp's logger: warnings kept (bounded); errors arrive through ``trouble``."""

    warnings: list[str] = field(default_factory=list)

    def debug(self, message: str) -> None:
        return

    def info(self, message: str) -> None:
        return

    def warning(self, message: str) -> None:
        if len(self.warnings) < MAX_NOTES:
            self.warnings.append(_clean(message))

    def error(self, message: str) -> None:
        return


class _Collector(PostProcessor):  # type: ignore[misc]
    """Runs after yt-dlp moved an item's files to their final place: notes them."""

    def __init__(self, downloader: Any, sink: list[dict[str, Any]]) -> None:
        super().__init__(downloader)
        self._sink = sink

    def run(self, info: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        facts = _item_facts(info)
        path = Path(str(facts["filepath"])) if facts.get("filepath") else None
        if path is not None and path.is_file():
            # Hashed here, as soon as yt-dlp has the file in place: for a video that is
            # while the recorder is still writing its response into the WARC.
            facts["digest"] = _digest_file(path)
        self._sink.append(facts)
        return [], info


def _item_facts(info: dict[str, Any]) -> dict[str, Any]:
    formats = info.get("requested_formats") or [info]
    return {
        "filepath": info.get("filepath"),
        "id": str(info.get("id") or "media"),
        "title": info.get("title"),
        "webpage_url": info.get("webpage_url") or info.get("original_url"),
        "extractor": info.get("extractor_key"),
        "format_id": info.get("format_id"),
        "format": info.get("format"),
        "ext": info.get("ext"),
        "vcodec": info.get("vcodec"),
        "duration": info.get("duration"),
        "formats": [
            {"format_id": f.get("format_id"), "protocol": f.get("protocol"),
             "url": f.get("url"), "manifest_url": f.get("manifest_url")}
            for f in formats
        ],
        "subtitles": [
            (lang, sub.get("filepath"), sub.get("ext"))
            for lang, sub in (info.get("requested_subtitles") or {}).items()
            if sub.get("filepath")
        ],
        "thumbnails": [t["filepath"] for t in info.get("thumbnails") or [] if t.get("filepath")],
        "infojson": info.get("infojson_filename"),
    }


class _Run:
    """One media fetch: its time budget, the files found, the problems met."""

    def __init__(self, options: MediaOptions, session: RecordingSession, page: PageCapture,
                 directory: Path) -> None:
        self.options = options
        self.session = session
        self.page = page
        self.directory = directory
        # Its own time limit, within what the capture's budget has left.
        self.deadline = Deadline(min(options.timeout_seconds,
                                     max(session.budget.deadline.remaining(), 0.0)))
        self.problems_not_listed = 0
        self.artifacts: list[DerivedArtifact] = []
        self.items: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []
        self.problems: list[_Note] = []
        self.warnings: list[str] = []
        self.names: set[str] = set(RESERVED_NAMES)
        self.fetched_urls: set[str] = set()
        self.used_ytdlp = False
        self.skipped_live: list[str] = []
        self.timings: dict[str, float] = {}
        self.deduplicated: list[dict[str, Any]] = []
        """Media found again by another route: the URL not fetched twice, or the same
        bytes not stored twice (what it was, and which item it is)."""
        self._by_sha256: dict[str, dict[str, Any]] = {}
        self._serial = 0
        self.not_media: list[dict[str, Any]] = []
        """Downloads whose bytes are no audio, video or image (a few, as examples)."""
        self.not_media_count = 0
        self.refused: list[str] = []
        """Media URLs the SSRF guard refused (a few kept, as examples; all are counted)."""
        self.refused_count = 0

    # -- the plan ----------------------------------------------------------------------

    def execute(self) -> FetcherReport:
        page, options = self.page, self.options
        media_type = (page.content_type or "").split(";")[0].strip().lower()
        begun = time.monotonic()
        if page.body_deferred and (media_type.startswith("image/") or not options.enabled):
            self._direct(page.final_url, page_body=True)
        elif not options.enabled:
            return self._report(Outcome("skipped", None, "media.enabled is false"))
        if options.enabled:
            targets = self._ytdlp_targets(media_type)
            if targets:
                self._run_ytdlp(targets)
            # The page's own <video>/<audio> sources (the page fetcher left them to us)
            # that no extractor took: downloaded as they are.
            for index, url in enumerate(page.media):
                if url in self.fetched_urls or len(self.items) >= options.max_items:
                    continue
                if self._out_of_budget("page videos", url, page.media[index:]):
                    break
                self._direct(url, page_body=False, tag=True)
            if (options.images and media_type in HTML_TYPES and 200 <= page.status < 300
                    and len(self.items) < options.max_items):
                self._page_images()
        self.timings["total_seconds"] = round(time.monotonic() - begun, 3)
        return self._report(self._outcome())

    def _ytdlp_targets(self, media_type: str) -> list[str]:
        page = self.page
        targets: list[str] = []
        if page.body_deferred and media_type.startswith("image/"):
            pass  # an image: yt-dlp has nothing to add
        elif (page.body_deferred or media_type in HTML_TYPES or media_type in MANIFEST_TYPES
              or media_type in BINARY_TYPES or _site_extractor_for(page.requested_url)):
            targets.append(page.requested_url)
        for url in getattr(self.session, "discovered_media", ()):
            if url not in targets and url not in self.fetched_urls:
                targets.append(url)
        return targets

    # -- yt-dlp ------------------------------------------------------------------------

    def _run_ytdlp(self, targets: list[str]) -> None:
        self.used_ytdlp = True
        begun = time.monotonic()
        work = self.directory / "yt-dlp"
        work.mkdir(exist_ok=True)
        traffic = MediaTraffic(self.session, deadline=self.deadline, workdir=self.directory)
        log = _Log()
        collected: list[dict[str, Any]] = []
        ydl: RecordingYoutubeDL | None = None
        try:
            ydl = RecordingYoutubeDL(self._params(work, log), traffic=traffic)
            ydl.add_post_processor(_Collector(ydl, collected), when="after_move")
            for index, url in enumerate(targets):
                left = self.options.max_items - len(collected)
                if left <= 0 or self._out_of_budget("media URLs", None, targets[index:]):
                    break
                known = _item_urls(collected)
                if url in known:
                    # The browser handed on a URL an extractor already downloaded (the
                    # page's <video>): fetching it again would only store it twice.
                    self.deduplicated.append({"url": url, "route": "browser",
                                              "same_as": known[url]})
                    continue
                ydl.params["playlistend"] = left
                problems_before = len(ydl.problems)
                ydl.extract_info(url, download=True)
                for problem in ydl.problems[problems_before:]:
                    self._note_problem(problem.message, problem.error, url)
        except YoutubeDLError as exc:  # e.g. a cookies file yt-dlp cannot parse
            self._note_problem(str(exc), exc, None)
        finally:
            if ydl is not None:
                ydl.close()  # saves cookies to our copy only; closes the director
            traffic.close()
        self.warnings += log.warnings
        self.fetched_urls |= traffic.requested
        self.timings["yt_dlp_seconds"] = round(time.monotonic() - begun, 3)
        for facts in collected:
            self._seal_ytdlp_item(facts, traffic.bodies)

    def _params(self, work: Path, log: _Log) -> dict[str, Any]:
        options = self.options
        params: dict[str, Any] = {
            "logger": log, "quiet": True, "noprogress": True, "no_color": True,
            # carry on past a failed item (a gallery's one bad video); every error is
            # still collected, with its exception, by RecordingYoutubeDL.trouble
            "ignoreerrors": True,
            "noplaylist": True, "playlistend": options.max_items,
            "format": options.format,
            # one directory, no temp dir: the paths yt-dlp reports for subtitles and
            # thumbnails are then where the files stay (it does not update them on a move)
            "paths": {"home": str(work)},
            "outtmpl": {"default": "%(id).80B.%(ext)s"},
            "restrictfilenames": True, "trim_file_name": 120,
            "writeinfojson": True, "clean_infojson": True,
            "writesubtitles": options.write_subtitles,
            "subtitleslangs": ["all", "-live_chat"],
            "writethumbnail": options.write_thumbnails,
            # Native downloaders only, so every segment goes through RecorderRH. The
            # ffmpeg input whitelist is the backstop for the paths where yt-dlp hands a
            # stream to ffmpeg by itself (HLS it cannot decrypt natively, live streams):
            # ffmpeg then may read local files only, and the download fails instead of
            # fetching unrecorded. ffmpeg as a post-processor (merge, remux) is unaffected.
            "external_downloader": {"default": "native"},
            "hls_prefer_native": True,
            "external_downloader_args": {"ffmpeg_i": ["-protocol_whitelist", "file,crypto,data"]},
            "concurrent_fragment_downloads": 1,
            # Fixed 1 MiB reads: yt-dlp otherwise grows its read size to 4 MiB, and the
            # varying large buffers fragment the allocator's arenas (peak RSS +100 MB).
            "buffersize": 1024 * 1024, "noresizebuffer": True,
            # A video missing a segment is not the video: fail it instead of sealing it.
            "skip_unavailable_fragments": False,
            "retries": 3, "fragment_retries": 3, "extractor_retries": 1,
            "continuedl": False, "overwrites": True,
            "proxy": "",  # never a proxy from the environment (RecorderRH refuses any)
            "geo_bypass": False,  # no made-up X-Forwarded-For: record what this place sees
            "cachedir": False,  # nothing carried from one capture to the next
            "match_filter": self._not_live,
        }
        # yt-dlp's own ffmpeg and ffprobe (merging, fixing up) run under the tool
        # limits: it finds both in this directory of wrappers (archiver.capture.tools).
        wrappers = program_directory(options.tool_limits)
        if wrappers is not None:
            params["ffmpeg_location"] = str(wrappers)
        if options.cookies_file is not None:
            # yt-dlp writes its cookie jar back on close: give it a copy, not the original
            copy = self.directory / "cookies.txt"
            shutil.copyfile(options.cookies_file, copy)
            params["cookiefile"] = str(copy)
        return params

    def _not_live(self, info: dict[str, Any], *, incomplete: bool = False) -> str | None:
        if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
            self.skipped_live.append(str(info.get("webpage_url") or info.get("id")))
            return "live stream: not captured (a recording needs ffmpeg's own downloader)"
        return None

    def _note_problem(self, message: str, error: BaseException | None, url: str | None) -> None:
        if is_nothing_found(error):
            return  # the generic extractor found no video on the page: none, not failure
        note = _Note(classify(message, error), _clean(message), url)
        self._count_refused(note)
        if len(self.problems) < MAX_NOTES:
            self.problems.append(note)
        else:
            self.problems_not_listed += 1

    def _seal_ytdlp_item(self, facts: dict[str, Any], bodies: list[RecordedBody]) -> None:
        path = Path(facts["filepath"]) if facts.get("filepath") else None
        if path is None or not path.is_file() or len(self.items) >= self.options.max_items:
            return
        source = _source_url(facts)
        kind, why = probe.media_kind(path, self.options.tool_limits)
        if kind is None:
            self._not_media(source, f"yt-dlp's {facts.get('ext') or 'download'}", why)
            return
        digest = facts.get("digest") or _digest_file(path)
        if self._already_sealed(digest, source, facts.get("extractor")):
            return
        base = f"media-{facts['id']}"
        ext = path.suffix.lstrip(".") or str(facts.get("ext") or "bin")
        media_type = _media_type(path)
        if kind == "image" and not media_type.startswith("image/"):
            # yt-dlp's "direct link" was an image: sealed as the image its bytes are.
            media_type = phash.image_media_type(path) or media_type
            ext = _EXTENSIONS.get(media_type, ext)
        name = self._name(base, ext)
        warc_type, url, refers = self._write(path, name, digest, bodies, fallback_url=source,
                                             media_type=media_type)
        self.artifacts.append(DerivedArtifact(name, "media", media_type, path, digest))
        item = {
            "artifact": name, "kind": kind, "source_url": url,
            "webpage_url": facts.get("webpage_url"), "extractor": facts.get("extractor"),
            "id": facts.get("id"), "title": facts.get("title"),
            "format_id": facts.get("format_id"), "format": facts.get("format"),
            "protocols": sorted({str(f.get("protocol")) for f in facts["formats"]}),
            "warc_record": warc_type, "warc_refers_to": refers,
            "pdq": self._hashes(path, kind, facts.get("duration")),
        }
        self.items.append(item)
        self._by_sha256[digest.sha256] = item
        self.fetched_urls.update(str(f.get("url")) for f in facts["formats"])
        for what, file_path, ext in self._side_files(facts):
            side = Path(file_path)
            if not side.is_file():
                continue
            side_name = self._name(f"{base}.{what}", ext)
            media_type = _media_type(side)
            side_digest = _digest_file(side)
            side_type, _url, _refers = self._write(
                side, side_name, side_digest, bodies, fallback_url=source,
                media_type=media_type, derived_type="metadata" if what == "info" else
                "conversion")
            self.artifacts.append(DerivedArtifact(side_name, "metadata", media_type, side,
                                                  side_digest))
            self.files.append({"artifact": side_name, "what": what, "of": name,
                               "warc_record": side_type})

    def _already_sealed(self, digest: Digest, url: str, route: Any) -> bool:
        """Whether these exact bytes are already an item (found by another route, e.g.
        the page's <img> and a thumbnail, or two extractors): then noted, not stored
        twice."""
        item = self._by_sha256.get(digest.sha256)
        if item is None:
            return False
        self.deduplicated.append({"url": url, "route": str(route or "direct"),
                                  "same_as": item["artifact"], "sha256": digest.sha256})
        return True

    @staticmethod
    def _side_files(facts: dict[str, Any]) -> Iterable[tuple[str, str, str]]:
        if facts.get("infojson"):
            yield "info", str(facts["infojson"]), "json"
        for lang, path, ext in facts["subtitles"]:
            yield _safe(str(lang)), str(path), str(ext or Path(str(path)).suffix.lstrip("."))
        for path in facts["thumbnails"]:
            yield "thumbnail", str(path), Path(str(path)).suffix.lstrip(".")

    # -- images and direct downloads ---------------------------------------------------

    def _page_images(self) -> None:
        begun = time.monotonic()
        if self._out_of_budget("page scans for images", None, None):
            return
        page_copy = self.directory / "page.html"
        try:
            with page_copy.open("wb") as body:
                done, _ = self.session.follow(
                    OutgoingRequest(url=self.page.final_url), role="media", body=body,
                    deadline=self.deadline)
        except CaptureError as exc:
            self.warnings.append(f"page images not looked for: {exc}")
            return
        if not 200 <= done.status < 300 or done.truncated:
            self.warnings.append(f"page images not looked for: {done.url} answered "
                                 f"{done.status}{' (truncated)' if done.truncated else ''}")
            return
        if done.body_limit is not None:  # a bomb: what was decoded is looked through
            self.warnings.append(f"page images looked for in part of the page only: "
                                 f"{done.body_problem}")
        urls = _page_image_urls(page_copy, done.url)
        for index, url in enumerate(urls):
            if len(self.items) >= self.options.max_items:
                break
            if url in self.fetched_urls:
                continue
            if self._out_of_budget("page images", url, urls[index:]):
                break
            self._direct(url, page_body=False)
        page_copy.unlink(missing_ok=True)
        self.timings["images_seconds"] = round(time.monotonic() - begun, 3)

    def _direct(self, url: str, *, page_body: bool, tag: bool = False) -> None:
        """Download ``url`` as one media file (an image, a <video> source of the page,
        or the page when it is itself a video); a page image that is small or not an
        image is left out quietly, a <video> source that fails is a problem."""
        self.fetched_urls.add(url)
        self._serial += 1
        path = self.directory / f"direct-{self._serial:03d}"
        try:
            with path.open("wb") as body:
                done, _ = self.session.follow(OutgoingRequest(url=url), role="media",
                                              body=body, deadline=self.deadline)
        except CaptureError as exc:
            self._direct_problem(page_body or tag, _Note(exc.reason, str(exc), url))
            path.unlink(missing_ok=True)
            return
        problem = _direct_status_problem(done.status, done.truncated, done.body_problem,
                                         done.body_limit, done.body_encoding)
        if problem is not None:
            self._direct_problem(page_body or tag,
                                 _Note(problem[0], f"{done.url}: {problem[1]}", url))
            path.unlink(missing_ok=True)
            return
        kind: probe.Kind | None
        if page_body or tag:
            # Media only when its bytes say so, whatever the Content-Type claimed.
            kind, why = probe.media_kind(path, self.options.tool_limits)
            if kind is None:
                self._not_media(done.url, done.media_type or "no Content-Type", why)
        else:  # a page <img>: kept when it is an image, big enough
            kind = "image" if phash.is_image(path) and self._big_enough(path) else None
        if kind is None:
            path.unlink(missing_ok=True)
            return
        digest = _digest_file(path)
        if self._already_sealed(digest, done.url, "page image" if not page_body else "direct"):
            path.unlink(missing_ok=True)
            return
        claimed = done.media_type
        if kind == "image" and not claimed.startswith("image/"):
            # The bytes are an image whatever the server called them: sealed as such.
            claimed = phash.image_media_type(path) or "application/octet-stream"
        ext = _extension(claimed, done.url)
        final = path.with_name(f"{path.name}.{ext}")
        path.rename(final)
        name = self._name(f"media-{_stem(done.url)}", ext)
        media_type = claimed if "/" in claimed else _media_type(final)
        response = RecordedBody(done.url, done.summary.payload_digest or "",
                                done.revisit_of or done.summary.response_record_id)
        warc_type, _url, refers = self._write(final, name, digest, [response],
                                              fallback_url=done.url, media_type=media_type)
        self.artifacts.append(DerivedArtifact(name, "media", media_type, final, digest))
        item = {
            "artifact": name, "kind": kind, "source_url": done.url, "webpage_url": None,
            "extractor": None, "id": None, "title": None, "format_id": None,
            "format": f"direct download ({media_type})", "protocols": [urlsplit(done.url).scheme],
            "warc_record": warc_type, "warc_refers_to": refers,
            "pdq": self._hashes(final, kind, None),
        }
        self.items.append(item)
        self._by_sha256[digest.sha256] = item

    def _out_of_budget(self, what: str, url: str | None,
                       rest: Sequence[str] | None) -> bool:
        """Whether the capture's budget (or this fetcher's time) stops the work before
        ``url`` (a page-named resource, counted against ``capture.max_subresources``;
        None for one that is not); if so, ``rest`` (``url`` and the URLs after it; None:
        one thing) is counted as skipped, not fetched."""
        budget = self.session.budget
        limit = budget.exhausted() or ("media.timeout_seconds" if self.deadline.expired
                                       else None)
        if limit is None and url is not None and not budget.take_resource(url):
            limit = RESOURCES
        if limit is None:
            return False
        left = 1 if rest is None else sum(1 for u in rest if u not in self.fetched_urls)
        budget.skip("media", what, limit, left)
        return True

    def _direct_problem(self, page_body: bool, note: _Note) -> None:
        self._count_refused(note)
        if page_body and len(self.problems) >= MAX_NOTES:
            self.problems_not_listed += 1
        elif page_body:
            self.problems.append(note)
        else:  # a broken <img> of the page: worth a line, not a failed media capture
            self.warnings.append(f"page image not captured: {note.message}")

    def _count_refused(self, note: _Note) -> None:
        """A refused URL costs only its own item: counted, a few kept as examples."""
        if note.reason == "refused":
            self.refused_count += 1
            if len(self.refused) < MAX_EXAMPLES:
                self.refused.append(note.message[:500])

    def _refused_text(self) -> str:
        if not self.refused_count:
            return ""
        return (f"; {self.refused_count} media URL(s) refused by the address guard, not "
                f"fetched (e.g. {self.refused[0]})")

    def _big_enough(self, path: Path) -> bool:
        try:
            with Image.open(path) as image:
                return min(image.size) >= self.options.min_image_side
        except (UnidentifiedImageError, OSError, ValueError):
            return False

    # -- records, names, hashes --------------------------------------------------------

    def _write(self, path: Path, name: str, digest: Digest, bodies: list[RecordedBody], *,
               fallback_url: str, media_type: str, derived_type: str = "conversion",
               ) -> tuple[str, str, str | None]:
        """Put ``path`` (``digest``) into the WARC; returns (record type, URL, refers-to).

        A file that is byte for byte one response's payload (its SHA-256 is that
        response's WARC-Payload-Digest: a video downloaded in one piece, an image) is not
        written again: a small ``metadata`` record names the response record and the
        digests, so the WARC holds a video once. Anything else (merged, remuxed, joined
        from segments, decoded from a compressed response) is a ``conversion`` (or, for
        info.json, ``metadata``) record holding the file."""
        wanted = warc_digest_hex(digest.sha256)
        body = next((b for b in reversed(bodies) if b.payload_digest == wanted), None)
        if body is not None:
            self.session.write_identity(url=body.url, name=name, digest=digest,
                                        refers_to=body.response_record_id,
                                        refers_to_url=body.url)
            return "identity", body.url, body.response_record_id
        refers = self.session.response_record_for(fallback_url)
        record_type: Literal["metadata", "conversion"] = (
            "metadata" if derived_type == "metadata" else "conversion")
        self.session.write_file(
            record_type, url=fallback_url, path=path, content_type=media_type,
            refers_to=refers, refers_to_url=fallback_url if refers else None, digest=digest)
        return record_type, fallback_url, refers

    def _hashes(self, path: Path, kind: str, duration: Any) -> list[dict[str, Any]]:
        if kind == "audio":
            return []
        try:
            if kind == "image":
                hashes = [phash.image_hash(path, limits=self.options.tool_limits)]
            else:
                hashes = phash.video_hashes(
                    path, samples=self.options.frame_samples,
                    workdir=self.directory / "frames",
                    duration=float(duration) if isinstance(duration, int | float) else None,
                    limits=self.options.tool_limits)
        except phash.HashError as exc:
            self.warnings.append(f"no perceptual hash for {path.name}: {exc}")
            return []
        return [h.as_json() for h in hashes]

    def _name(self, base: str, ext: str) -> str:
        stem = _safe(base)[: MAX_NAME - len(ext) - 8]
        ext = _safe(ext)[:16] or "bin"
        name = f"{stem}.{ext}"
        serial = 1
        while name in self.names:
            serial += 1
            name = f"{stem}-{serial}.{ext}"
        self.names.add(name)
        return name

    # -- the result --------------------------------------------------------------------

    def _outcome(self) -> Outcome:
        outcome = self._found()
        skipped = self.session.budget.skipped_text("media")
        if skipped is None:
            return outcome
        # The budget stopped the search: what was not looked at may have been media.
        if outcome.status in ("ok", "none"):
            said = outcome.message if outcome.status == "ok" else "no media item captured"
            return Outcome("partial", "budget", f"{said}; {skipped}")
        return Outcome(outcome.status, outcome.reason, f"{outcome.message}; {skipped}")

    def _found(self) -> Outcome:
        count = len(self.items)
        first = _most_telling(self.problems)
        not_media = self._not_media_text()
        refused = self._refused_text()
        if count and first is None:
            # A refused page image is a warning, not a problem: still said and counted.
            return Outcome("ok", None, f"{count} media item(s) captured{refused}{not_media}")
        if count and first is not None:
            # Refused URLs cost only their own items: said once, counted, never the
            # whole fetch's failure.
            told = "" if first.reason == "refused" else f"; {first.message}"
            return Outcome("partial", first.reason,
                           f"{count} media item(s) captured{told}{refused}{not_media}")
        if self.page.status in (410, 451):
            return Outcome("failed", "removed",
                           f"the post answered HTTP {self.page.status}: taken down")
        if first is not None:
            return Outcome("failed", first.reason, first.message)
        if self.skipped_live:
            return Outcome("failed", "unsupported",
                           "a live stream: not captured (" + ", ".join(self.skipped_live[:3])
                           + ")")
        if self.not_media_count:
            return Outcome("none", "not-media",
                           f"no video, audio or image found on the page{not_media}")
        return Outcome("none", None, "no video, audio or image found on the page")

    def _not_media(self, url: str, claimed: str, why: str) -> None:
        """A download that its bytes show is no media: counted, a few kept as examples."""
        self.not_media_count += 1
        if len(self.not_media) < MAX_EXAMPLES:
            self.not_media.append({"url": url, "claimed": claimed[:100], "found": why})

    def _not_media_text(self) -> str:
        if not self.not_media_count:
            return ""
        first = self.not_media[0]
        return (f"; {self.not_media_count} download(s) not media by their bytes "
                f"(e.g. {first['url'][:200]}, {first['claimed']}: {first['found']})")

    def _report(self, outcome: Outcome) -> FetcherReport:
        software = {"yt-dlp": YT_DLP_VERSION}
        ffmpeg = phash.ffmpeg_version() if self.artifacts else None
        if ffmpeg is not None:
            software["ffmpeg"] = ffmpeg
        summary = {
            "yt_dlp_version": YT_DLP_VERSION,
            "format_selection": self.options.format,
            "items": self.items,
            "files": self.files,
            "problems": [p.as_json() for p in self.problems],
            "deduplicated": self.deduplicated[:MAX_NOTES],
            "not_media": {"count": self.not_media_count, "examples": self.not_media},
            "refused": {"count": self.refused_count, "examples": self.refused},
            "budget": {
                "requests": self.session.budget.requests_of("media"),
                "skipped": [{"what": what, "limit": limit, "count": count}
                            for what, limit, count in self.session.budget.skipped("media")],
            },
        }
        if self.problems_not_listed:
            summary["problems_not_listed"] = self.problems_not_listed
        provenance = {
            "options": self.options.as_json(),
            "used_yt_dlp": self.used_ytdlp,
            "timings": self.timings,
            "warnings": self.warnings[:MAX_NOTES],
            "skipped_live": self.skipped_live[:MAX_NOTES],
        }
        return FetcherReport(name="media", outcome=outcome, artifacts=tuple(self.artifacts),
                             software=software, summary=summary, provenance=provenance)


# -- helpers -----------------------------------------------------------------------------


def _site_extractor_for(url: str) -> str | None:
    """The key of a yt-dlp extractor (other than the generic one) that claims ``url``."""
    for extractor in gen_extractor_classes():
        key = extractor.ie_key()
        if key != "Generic" and extractor.suitable(url):
            return str(key)
    return None


def _digest_file(path: Path) -> Digest:
    """SHA-256, SHA-512 and size of a file, in one read."""
    hasher = Hasher()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            hasher.update(chunk)
    return hasher.digest()


def _item_urls(collected: list[dict[str, Any]]) -> dict[str, str]:
    """Every URL an item already downloaded was fetched from, with the item's id."""
    urls: dict[str, str] = {}
    for facts in collected:
        for fmt in facts["formats"]:
            for key in ("url", "manifest_url"):
                if fmt.get(key):
                    urls.setdefault(str(fmt[key]), str(facts.get("id")))
    return urls


def _source_url(facts: dict[str, Any]) -> str:
    for fmt in facts["formats"]:
        for key in ("manifest_url", "url"):
            if fmt.get(key):
                return str(fmt[key])
    return str(facts.get("webpage_url") or "")


def _direct_status_problem(status: int, truncated: bool, body_problem: str | None,
                           body_limit: str | None = None, body_encoding: str | None = None,
                           ) -> tuple[str, str] | None:
    if body_limit is not None:
        # Before `truncated`: a bomb is cut by what it decodes to, not by its wire size.
        return "decoded-size-limit", f"{body_problem}; recorded as received, not kept"
    if body_encoding is not None:
        return "unsupported-encoding", f"{body_problem}; recorded as received, not kept"
    if truncated:
        return "too-large", ("passed the media byte limit (capture.max_media_bytes or "
                             "capture.max_total_bytes); recorded truncated, not kept")
    if status in (410, 451):
        return "removed", f"HTTP {status}"
    if status == 404:
        return "not-found", "HTTP 404"
    if not 200 <= status < 300:
        return ("network" if status >= 500 else "error"), f"HTTP {status}"
    if body_problem is not None:
        return "error", body_problem
    return None


def _most_telling(problems: list[_Note]) -> _Note | None:
    if not problems:
        return None
    return min(problems, key=lambda p: _REASON_ORDER.index(p.reason)
               if p.reason in _REASON_ORDER else len(_REASON_ORDER))


def _media_type(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".info.json"):
        return "application/json"
    return MEDIA_TYPES.get(path.suffix.lower().lstrip("."), "application/octet-stream")


def _extension(media_type: str, url: str) -> str:
    if media_type in _EXTENSIONS:
        return _EXTENSIONS[media_type]
    suffix = Path(urlsplit(url).path).suffix.lower().lstrip(".")
    return suffix if suffix in MEDIA_TYPES else "bin"


def _stem(url: str) -> str:
    return Path(urlsplit(url).path).stem or urlsplit(url).hostname or "media"


def _safe(text: str) -> str:
    """Letters, digits, dot, dash and underscore only: no path separators, no dotfiles."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return re.sub(r"\.{2,}", ".", cleaned)


def _clean(message: str) -> str:
    text = _ANSI.sub("", message).strip()
    text = re.sub(r"^(ERROR|WARNING):\s*", "", text)
    return text[:500]


class _ImageLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_picture = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v for k, v in attrs if v}
        if tag == "picture":
            self._in_picture += 1
        elif tag == "img":
            if "src" in values:
                self.found.append(values["src"])
            elif "srcset" in values:
                self.found += parse_srcset(values["srcset"])[-1:]
        elif tag == "source" and self._in_picture and "srcset" in values:
            self.found += parse_srcset(values["srcset"])[-1:]

    def handle_endtag(self, tag: str) -> None:
        if tag == "picture" and self._in_picture:
            self._in_picture -= 1


def _page_image_urls(path: Path, base: str) -> list[str]:
    """The page's ``<img>`` (and ``<picture><source>``) URLs, absolute, in order, once."""
    parser = _ImageLinks()
    with path.open("rb") as handle:
        data = handle.read(PAGE_PARSE_LIMIT)
    parser.feed(data.decode("utf-8", errors="replace"))
    parser.close()
    urls: dict[str, None] = {}  # ordered, and O(1) to look up (a page may name 100,000)
    for raw in parser.found:
        if raw.strip().lower().startswith(("data:", "javascript:", "blob:")):
            continue
        try:
            absolute = urljoin(base, raw.strip()).split("#", 1)[0]
        except ValueError:
            continue
        if urlsplit(absolute).scheme in ("http", "https"):
            urls.setdefault(absolute)
    return list(urls)
