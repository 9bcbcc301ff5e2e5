"""Perceptual hashes: PDQ (Meta's 256-bit image hash) of images and of sampled video
frames, so re-encoded, resized or recompressed copies of the same footage are found.

Two PDQ hashes of the same picture differ in few bits (a JPEG re-encode: a handful; a
resize: a little more); unrelated pictures differ in about half of the 256. A hash's
``quality`` (0-100) says how much structure the picture had: a flat frame (a black
intro, a blank slide) gets a low quality and a hash that "matches" every other flat
frame, so :data:`MIN_QUALITY` hashes are kept but not used to match.

Hashes are written as 64 hex digits (the 256 bits in numpy ``packbits`` order). Frames
come from ffmpeg (``-ss`` before ``-i``: a seek, not a decode of everything before),
scaled to at most 512 pixels wide; images are decoded by Pillow, reduced to at most
1024 pixels, never more than :data:`MAX_PIXELS` decoded; one of more than
:data:`IN_PROCESS_PIXELS` (a few hundred kilobytes of PNG can declare 8000x8000 pixels,
half a gigabyte decoded) is decoded and reduced by ffmpeg instead, out of this process.
ffmpeg and ffprobe run under the tool limits (:mod:`archiver.capture.tools`): a hostile
image or video can make them fail, not exhaust the machine.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pdqhash
from PIL import Image, UnidentifiedImageError

from archiver.capture import tools

MIN_QUALITY = 50
"""PDQ's own advice: below this a hash says too little to match on."""
MAX_PIXELS = 64_000_000
IN_PROCESS_PIXELS = 16_000_000
"""Images up to this many pixels (or JPEGs, which decode at a reduced size) are decoded
in this process, at most about 130 MB; larger ones by ffmpeg under the tool limits."""
DEFAULT_MAX_DISTANCE = 31
"""Hamming distance (of 256 bits) under which two PDQ hashes are taken as the same
picture; PDQ's authors use 31 as the match threshold."""
_VERSION_LIMITS = tools.ToolLimits(memory_mib=1024, seconds=30)


class HashError(Exception):
    """A file could not be hashed (not an image or video ffmpeg/Pillow can decode)."""


@dataclass(frozen=True, slots=True)
class FrameHash:
    """The PDQ hash of an image (``position`` 0) or of one sampled video frame."""

    position: int
    seconds: float | None
    pdq: str
    quality: int

    def as_json(self) -> dict[str, Any]:
        return {"position": self.position, "seconds": self.seconds, "pdq": self.pdq,
                "quality": self.quality}


def image_hash(path: Path, *, position: int = 0, seconds: float | None = None,
               limits: tools.ToolLimits | None = None) -> FrameHash:
    """PDQ of the image at ``path`` (a large one reduced by ffmpeg under ``limits``).
    Raises :class:`HashError`."""
    rgb: Image.Image | None = None
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise HashError(f"{path.name}: {image.width}x{image.height} is too large "
                                "to hash")
            if image.format == "JPEG" or image.width * image.height <= IN_PROCESS_PIXELS:
                image.draft("RGB", (1024, 1024))  # JPEG: decode at a reduced size
                rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HashError(f"{path.name} is not an image Pillow can read: {exc}") from exc
    if rgb is None:
        rgb = _reduced_by_ffmpeg(path, limits or tools.ToolLimits())
    rgb.thumbnail((1024, 1024))
    bits, quality = pdqhash.compute(np.asarray(rgb))
    return FrameHash(position, seconds, _hex(bits), int(quality))


def _reduced_by_ffmpeg(path: Path, limits: tools.ToolLimits) -> Image.Image:
    """The image at ``path`` fitted into 1024x1024 by ffmpeg (as a BMP of at most 3 MB
    on its standard output), so its full size is decoded in ffmpeg's bounded memory."""
    done = tools.run(
        [_tool("ffmpeg"), "-nostdin", "-v", "error", "-protocol_whitelist", "file",
         "-i", str(path), "-frames:v", "1", "-vf",
         "scale=w=1024:h=1024:force_original_aspect_ratio=decrease", "-pix_fmt", "bgr24",
         "-f", "image2pipe", "-c:v", "bmp", "-"],
        limits)
    stopped = limits.explain(done.returncode, done.stderr)
    if stopped is not None:
        raise HashError(f"ffmpeg reducing {path.name} {stopped}")
    try:
        output = done.stdout if isinstance(done.stdout, bytes) else b""
        with Image.open(io.BytesIO(output)) as reduced:
            return reduced.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise HashError(f"ffmpeg could not reduce {path.name}") from exc


def image_media_type(path: Path) -> str | None:
    """The media type of the image format Pillow identifies in ``path`` (None: none)."""
    try:
        with Image.open(path) as image:
            return Image.MIME.get(image.format or "")
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def is_image(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            return image.format is not None
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def video_hashes(path: Path, *, samples: int, workdir: Path,
                 duration: float | None = None,
                 limits: tools.ToolLimits | None = None) -> list[FrameHash]:
    """PDQ of ``samples`` frames spread evenly over the video (at the middle of each of
    ``samples`` equal parts), ffmpeg under ``limits`` (default: :class:`ToolLimits`'s).
    Raises :class:`HashError` when no frame can be decoded."""
    if samples <= 0:
        return []
    limits = limits or tools.ToolLimits()
    ffmpeg = _tool("ffmpeg")
    if duration is None or duration <= 0:
        duration = probe_duration(path, limits=limits)
    times = [duration * (i + 0.5) / samples for i in range(samples)] if duration else [0.0]
    workdir.mkdir(parents=True, exist_ok=True)
    frames = [workdir / f"frame-{position:03d}.bmp" for position in range(len(times))]
    # One ffmpeg for every frame (each input seeks to its own time, each output takes one
    # frame): starting ffmpeg costs more than decoding a frame, and a post's video is
    # hashed on the capture's clock. BMP: lossless like PNG, with nothing to compress.
    command = [ffmpeg, "-nostdin", "-v", "error", "-y"]
    for seconds in times:
        command += ["-ss", f"{seconds:.3f}", "-i", str(path)]
    for position, frame in enumerate(frames):
        command += ["-map", f"{position}:v:0", "-frames:v", "1",
                    "-vf", "scale='min(512,iw)':-2", str(frame)]
    done = tools.run(command, limits)
    stopped = limits.explain(done.returncode, done.stderr)
    if stopped is not None:
        raise HashError(f"ffmpeg sampling frames of {path.name} {stopped}")
    if done.returncode != 0:
        # A time past a short video's real end fails the whole command: one by one, so
        # the frames that exist are still hashed.
        for frame, seconds in zip(frames, times, strict=True):
            single = tools.run(
                [ffmpeg, "-nostdin", "-v", "error", "-y", "-ss", f"{seconds:.3f}", "-i",
                 str(path), "-frames:v", "1", "-vf", "scale='min(512,iw)':-2", str(frame)],
                limits)
            stopped = limits.explain(single.returncode, single.stderr)
            if stopped is not None:
                raise HashError(f"ffmpeg sampling frames of {path.name} {stopped}")
    hashes: list[FrameHash] = []
    for position, (frame, seconds) in enumerate(zip(frames, times, strict=True)):
        if not frame.exists():
            continue
        try:
            hashes.append(image_hash(frame, position=position, seconds=round(seconds, 3),
                                     limits=limits))
        finally:
            frame.unlink(missing_ok=True)
    if not hashes:
        raise HashError(f"ffmpeg could not decode a frame of {path.name}")
    return hashes


def probe_duration(path: Path, *, limits: tools.ToolLimits | None = None) -> float | None:
    limits = limits or tools.ToolLimits()
    done = tools.run(
        [_tool("ffprobe"), "-v", "error", "-protocol_whitelist", "file",
         "-show_entries", "format=duration", "-of", "default=noprint_wrappers=1:nokey=1",
         str(path)],
        limits, text=True,
    )
    try:
        return float(str(done.stdout).strip())
    except ValueError:
        return None


def file_hashes(path: Path, *, samples: int, workdir: Path,
                limits: tools.ToolLimits | None = None) -> list[FrameHash]:
    """An image's hash, or a video's frame hashes. Raises :class:`HashError`."""
    if is_image(path):
        return [image_hash(path, limits=limits)]
    return video_hashes(path, samples=samples, workdir=workdir, limits=limits)


def distances(query: list[str], candidates: list[str]) -> np.ndarray[Any, Any]:
    """Hamming distances, ``len(query)`` by ``len(candidates)``."""
    q = _bits(query)
    c = _bits(candidates)
    xor = np.bitwise_xor(q[:, None, :], c[None, :, :])
    counts: np.ndarray[Any, Any] = np.unpackbits(xor, axis=2).sum(axis=2)
    return counts


def _bits(hashes: list[str]) -> np.ndarray[Any, Any]:
    if not hashes:
        return np.zeros((0, 32), dtype=np.uint8)
    return np.frombuffer(b"".join(bytes.fromhex(h) for h in hashes),
                         dtype=np.uint8).reshape(len(hashes), 32)


def _hex(bits: Any) -> str:
    return bytes(np.packbits(np.asarray(bits, dtype=np.uint8))).hex()


def _tool(name: str) -> str:
    found = tools.program(name)
    if found is None:
        raise HashError(f"{name} is not installed (apt-get install ffmpeg)")
    return found


def ffmpeg_version() -> str | None:
    """ffmpeg's version string (named in manifests when it merged or sampled), or None."""
    found = shutil.which("ffmpeg")
    if found is None:
        return None
    done = tools.run([found, "-version"], _VERSION_LIMITS, text=True)
    out = str(done.stdout or "")
    first = out.splitlines()[0] if out else ""
    parts = first.split()
    return parts[2] if len(parts) > 2 and parts[:2] == ["ffmpeg", "version"] else None
