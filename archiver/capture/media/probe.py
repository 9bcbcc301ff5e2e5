"""Is a downloaded file media? Its bytes decide, not the Content-Type or the extractor.

A server can call anything ``video/mp4``, and yt-dlp's generic extractor takes a URL
whose body is not HTML for a "direct video link" (``unknown_video``): a page saying
``hello`` would be sealed as a video. So before a file becomes a media item it is
probed: an image by its signature (Pillow identifies the format from the first bytes,
without decoding the picture), audio and video by ffprobe, under the tool limits
(:mod:`archiver.capture.tools`), with local files as its only protocol and a whitelist
of container formats, so that a playlist (HLS, DASH) or a text format that ffprobe
would follow or accept is not media.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from archiver.capture import tools
from archiver.capture.media import phash

Kind = Literal["image", "video", "audio"]

CONTAINERS = ",".join((
    "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "mpegts", "mpeg", "flv", "avi", "asf",
    "ogg", "mp3", "aac", "wav", "w64", "flac", "aiff", "amr", "caf", "ivf", "m4v",
    "h264", "hevc", "mpegvideo", "rm", "mxf", "nut", "dv", "wv", "ape", "ac3", "eac3",
    "dts", "truehd",
))
"""ffprobe's demuxers that make a file audio or video here (``-format_whitelist``)."""


def media_kind(path: Path, limits: tools.ToolLimits) -> tuple[Kind | None, str]:
    """What ``path`` is by its bytes: ``image``, ``video``, ``audio``, or None (not
    media), with a few words saying why."""
    if phash.is_image(path):
        return "image", "an image format Pillow identifies"
    ffprobe = tools.program("ffprobe")
    if ffprobe is None:
        return None, "ffprobe is not installed (apt-get install ffmpeg)"
    done = tools.run(
        [ffprobe, "-v", "error", "-protocol_whitelist", "file",
         "-format_whitelist", CONTAINERS, "-show_entries",
         "stream=codec_type,disposition:format=format_name", "-of", "json", str(path)],
        limits, text=True)
    stopped = limits.explain(done.returncode, done.stderr)
    if stopped is not None:
        return None, f"ffprobe {stopped}"
    if done.returncode != 0:
        return None, "no audio, video or image format ffprobe or Pillow knows"
    try:
        found = json.loads(str(done.stdout))
        streams = [s for s in found.get("streams", []) if isinstance(s, dict)]
    except (json.JSONDecodeError, AttributeError):
        return None, "ffprobe's answer could not be read"
    video = [s for s in streams if s.get("codec_type") == "video"
             and not (s.get("disposition") or {}).get("attached_pic")]
    if video:
        return "video", f"a video ({found.get('format', {}).get('format_name')})"
    if any(s.get("codec_type") == "audio" for s in streams):
        return "audio", f"audio ({found.get('format', {}).get('format_name')})"
    return None, "a container without an audio or video stream"
