"""``archiver similar FILE|CAPTURE_ID``: captures whose media look alike (PDQ hashes).

A FILE (an image or a video) is hashed here, as captures are (a video: sampled frames);
a capture id (or unique prefix) uses the hashes sealed in that capture's manifest.
"""

from __future__ import annotations

import argparse
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from archiver.cli.common import EXIT_OK, emit_json, shown
from archiver.errors import ArchiverError

if TYPE_CHECKING:
    from archiver.settings import Settings


def add_arguments(command: str, p: argparse.ArgumentParser) -> None:
    """The arguments of ``similar``."""
    from archiver.capture.media import phash

    p.set_defaults(handler=cmd_similar)
    p.add_argument("target", help="an image or video file, or a capture id (or prefix)")
    p.add_argument("--max-distance", type=int, default=phash.DEFAULT_MAX_DISTANCE,
                   metavar="N", help="Hamming distance of 256 bits that still counts as "
                                     f"alike (default {phash.DEFAULT_MAX_DISTANCE})")
    p.add_argument("--json", action="store_true", help="one JSON object per capture per line")


def cmd_similar(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if not 0 <= args.max_distance <= 256:
        raise ArchiverError("--max-distance must be between 0 and 256")

    from archiver.archive import Archive

    target = Path(args.target)
    with Archive.open(settings) as archive:
        if target.is_file():
            query = _file_hashes(settings, target)
            label = str(target)
            matches = archive.similar_to_hashes(query, max_distance=args.max_distance)
        else:
            capture, matches = archive.similar_to_capture(args.target,
                                                          max_distance=args.max_distance)
            label = f"capture {capture.id}"
    for match in matches:
        if args.json:
            emit_json(out, match.as_json())
        else:
            print(shown(f"{match.capture_id}  distance {match.distance:3d}  "
                        f"{match.matching_hashes:3d} hash(es)  {match.artifact}  {match.url}"),
                  file=out)
    if not args.json and not matches:
        print(shown(f"no capture with media like {label} (max distance {args.max_distance})"),
              file=out)
    return EXIT_OK


def _file_hashes(settings: Settings, path: Path) -> list[str]:
    from archiver.capture.media import phash


    work = settings.work_dir / f"similar-{uuid.uuid4().hex}"
    work.mkdir(parents=True, mode=0o700)
    try:
        hashes = phash.file_hashes(path, samples=settings.media.frame_samples or 8,
                                   workdir=work)
    except phash.HashError as exc:
        raise ArchiverError(str(exc)) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    kept = [h.pdq for h in hashes if h.quality >= phash.MIN_QUALITY]
    if not kept:
        raise ArchiverError(f"{path} has too little structure for a perceptual hash "
                            f"(PDQ quality below {phash.MIN_QUALITY})")
    return kept
