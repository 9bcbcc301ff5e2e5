"""PDQ hashes: a re-encoded, resized image stays close; an unrelated one does not; a
video's sampled frames are hashed at the times asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from archiver.capture.media import phash


def test_reencoded_image_is_close_and_unrelated_image_is_far(media_files: Any) -> None:
    """photo2 vs its JPEG q=20, 75% resize: within 31 bits; vs photo1 and photo3: not."""
    directory, _routes = media_files
    original = phash.image_hash(directory / "photo2.png")
    copy = phash.image_hash(directory / "photo2-reencoded.jpg")
    others = [phash.image_hash(directory / f"photo{i}.png") for i in (1, 3)]
    assert original.quality >= phash.MIN_QUALITY
    found = phash.distances([original.pdq], [copy.pdq, *(o.pdq for o in others)])
    assert found[0, 0] <= phash.DEFAULT_MAX_DISTANCE
    assert all(d > phash.DEFAULT_MAX_DISTANCE for d in found[0, 1:])


def test_video_frames_are_sampled_evenly(media_files: Any, tmp_path: Path) -> None:
    """Four samples of a 2 s clip: at 0.25, 0.75, 1.25 and 1.75 s, each a 64-hex hash."""
    directory, _routes = media_files
    hashes = phash.video_hashes(directory / "clip.mp4", samples=4, workdir=tmp_path)
    assert [h.seconds for h in hashes] == pytest.approx([0.25, 0.75, 1.25, 1.75], abs=0.02)
    assert all(len(h.pdq) == 64 and int(h.pdq, 16) >= 0 for h in hashes)
    assert list(tmp_path.iterdir()) == []  # frames are deleted once hashed


def test_a_file_that_is_neither_image_nor_video_is_a_hash_error(tmp_path: Path) -> None:
    """Text is refused with HashError naming the file."""
    path = tmp_path / "notes.txt"
    path.write_text("not media")
    with pytest.raises(phash.HashError, match=r"notes\.txt"):
        phash.file_hashes(path, samples=2, workdir=tmp_path / "w")
