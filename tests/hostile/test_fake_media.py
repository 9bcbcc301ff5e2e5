"""Hostile family "fake-media": bodies that claim to be media (by Content-Type, by a
<video> tag, or by yt-dlp's generic extractor taking any non-HTML body for a "direct
video link") but whose bytes are not.

The rule: media is media only when its bytes say so (an image format Pillow identifies,
or a container in which ffprobe finds an audio or video stream). Anything else is not a
media item: no artifact, and the outcome counts and explains it (reason ``not-media``).
Real media served under a wrong Content-Type is still kept, by what its bytes are.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from encoded_site import Body, record, serve
from PIL import Image

FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def _png() -> bytes:
    out = io.BytesIO()
    Image.effect_mandelbrot((200, 150), (-2.0, -1.2, 1.0, 1.2), 60).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One second of real H.264 video in MPEG-TS, made by ffmpeg."""
    path = tmp_path_factory.mktemp("fake-media") / "clip.ts"
    subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=duration=1:size=160x120:rate=10", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-f", "mpegts", "-y", str(path)],
                   check=True, capture_output=True, timeout=120)
    return path.read_bytes()


@dataclass(frozen=True)
class Case:
    name: str
    routes: dict[str, Body]
    status: str
    reason: str | None
    kind: str | None = None  # the one item's kind, when media is expected


PLAYLIST = (b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/passwd\n"
            b"#EXT-X-ENDLIST\n")
CASES = [
    Case("text/html 'hello' (yt-dlp: a direct video link)",
         {"/": Body("text/html", b"hello")}, "none", "not-media"),
    Case("words as application/octet-stream",
         {"/": Body("application/octet-stream", b"just some words\n")}, "none", "not-media"),
    Case("HTML served as video/mp4", {"/": Body("video/mp4", b"<html><p>hi</p></html>")},
         "none", "not-media"),
    Case("JSON served as video/webm", {"/": Body("video/webm", b'{"video": true}')},
         "none", "not-media"),
    Case("an HLS playlist naming a local file, as video/mp4",
         {"/": Body("video/mp4", PLAYLIST)}, "none", "not-media"),
    Case("zeros served as audio/mpeg", {"/": Body("audio/mpeg", bytes(64 * 1024))},
         "none", "not-media"),
    Case("a page whose <video> source is text",
         {"/": Body("text/html", b'<html><body><video src="/v.mp4"></video></body></html>'),
          "/v.mp4": Body("video/mp4", b"this is not a video")}, "none", "not-media"),
]


@pytest.mark.hostile("fake-media")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_body_that_is_not_media_by_its_bytes_is_no_media_item(
        case: Case, tmp_path: Path) -> None:
    """No media artifact; the outcome says ``not-media`` and counts the download."""
    with serve(case.routes) as site:
        captured = record(site.url("/"), tmp_path)
    outcome = captured.report.outcome
    assert (outcome.status, outcome.reason) == (case.status, case.reason), outcome
    assert "not media by their bytes" in (outcome.message or "")
    assert captured.media_artifacts == []
    assert captured.report.summary["items"] == []
    found = captured.report.summary["not_media"]
    assert found["count"] >= 1
    assert found["examples"][0]["url"].startswith(site.base)


@pytest.mark.hostile("fake-media")
def test_an_image_under_a_video_content_type_is_kept_as_an_image(tmp_path: Path) -> None:
    """The bytes decide the other way too: a PNG called video/mp4 is an image item."""
    with serve({"/": Body("video/mp4", _png())}) as site:
        captured = record(site.url("/"), tmp_path)
    assert captured.report.outcome.status == "ok", captured.report.outcome
    assert [i["kind"] for i in captured.report.summary["items"]] == ["image"]
    (artifact,) = [a for a in captured.report.artifacts if a.role == "media"]
    assert (artifact.media_type, artifact.name.rsplit(".", 1)[1]) == ("image/png", "png")


@pytest.mark.hostile("fake-media")
def test_a_real_video_as_octet_stream_is_kept_as_a_video(tmp_path: Path,
                                                         clip: bytes) -> None:
    """yt-dlp's direct-link guess is right here, and the probe confirms it: kept."""
    with serve({"/": Body("application/octet-stream", clip)}) as site:
        captured = record(site.url("/"), tmp_path)
    assert captured.report.outcome.status == "ok", captured.report.outcome
    (item,) = captured.report.summary["items"]
    assert item["kind"] == "video"
    (artifact,) = [a for a in captured.report.artifacts if a.role == "media"]
    assert artifact.path.read_bytes() == clip
