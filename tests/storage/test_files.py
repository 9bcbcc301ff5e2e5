"""storage.files: fsync_dir and publish, the project's one copy of durable publication."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import fsync_dir, publish


def test_fsync_dir_syncs_a_directory_and_refuses_a_file(tmp_path: Path) -> None:
    """fsync_dir works on a directory; a file or a missing path is an OSError."""
    fsync_dir(tmp_path)
    a_file = tmp_path / "file"
    a_file.write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        fsync_dir(a_file)
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")


def test_publish_renames_over_an_existing_file(tmp_path: Path) -> None:
    """publish moves the temporary file onto the final name, replacing what was there."""
    temp, final = tmp_path / "new.part", tmp_path / "final"
    temp.write_bytes(b"complete")
    final.write_bytes(b"old")
    publish(temp, final)
    assert final.read_bytes() == b"complete"
    assert not temp.exists()


def test_publish_without_replace_never_touches_an_existing_file(tmp_path: Path) -> None:
    """With replace=False an existing final name is left alone (FileExistsError) and the
    temporary file stays for the caller; a free name is taken and the temporary goes."""
    temp, final = tmp_path / "new.part", tmp_path / "final"
    temp.write_bytes(b"complete")
    final.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        publish(temp, final, replace=False)
    assert final.read_bytes() == b"old"
    assert temp.read_bytes() == b"complete"
    final.unlink()
    publish(temp, final, replace=False)
    assert final.read_bytes() == b"complete"
    assert not temp.exists()


def test_publish_of_a_missing_file_raises_and_creates_nothing(tmp_path: Path) -> None:
    """A temporary file that does not exist is an OSError and no final name appears."""
    with pytest.raises(FileNotFoundError):
        publish(tmp_path / "missing.part", tmp_path / "final")
    assert not (tmp_path / "final").exists()
