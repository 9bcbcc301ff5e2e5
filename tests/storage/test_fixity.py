"""storage.fixity: one stored copy judged against expected digests, and repaired from
another store, on the local store and the in-memory fake."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import BinaryIO

import pytest

from storage import LocalBlobStore, MemoryBlobStore
from storage.errors import BlobIntegrityError
from storage.fixity import check_copy, repair_copy

DATA = b"evidence " * 1000
SHA256 = hashlib.sha256(DATA).hexdigest()
SHA512 = hashlib.sha512(DATA).hexdigest()


def _stores(tmp_path: Path) -> tuple[LocalBlobStore, LocalBlobStore]:
    first, second = LocalBlobStore(tmp_path / "a"), LocalBlobStore(tmp_path / "b")
    for store in (first, second):
        store.put_stream(_stream(DATA), sha256=SHA256, size=len(DATA), sha512=SHA512)
    return first, second


def _stream(data: bytes) -> BinaryIO:
    return io.BytesIO(data)


def _overwrite(store: LocalBlobStore, data: bytes) -> None:
    path = store.path_for(SHA256)
    os.chmod(path, 0o644)
    path.write_bytes(data)


def test_a_whole_copy_is_ok_with_every_digest_measured(tmp_path: Path) -> None:
    store, _ = _stores(tmp_path)
    read: list[int] = []
    result = check_copy(store, SHA256, size=len(DATA), sha512=SHA512, on_bytes=read.append)
    assert result.ok
    assert result.measured is not None
    assert (result.measured.sha512, result.bytes_read, sum(read)) == (SHA512, len(DATA),
                                                                      len(DATA))


@pytest.mark.parametrize(("damage", "state", "detail"), [
    (None, "missing", "no copy is held"),
    (DATA[:-1], "altered", "size, sha256, sha512 differ (8999 bytes"),
    (DATA[:-1] + b"X", "altered", "sha256, sha512 differ"),
    (DATA + b"x" * (3 * 1024 * 1024), "altered", "longer than the expected 9000 bytes"),
])
def test_a_damaged_copy_says_what_differs(tmp_path: Path, damage: bytes | None, state: str,
                                          detail: str) -> None:
    store, _ = _stores(tmp_path)
    if damage is None:
        store.path_for(SHA256).unlink()
    else:
        _overwrite(store, damage)
    result = check_copy(store, SHA256, size=len(DATA), sha512=SHA512)
    assert result.state == state
    assert result.detail.startswith(detail)
    # A copy longer than its signed length is not read past it (plus one byte).
    assert result.bytes_read <= len(DATA) + 1


def test_a_repair_restores_the_bytes_and_never_installs_bad_ones(tmp_path: Path) -> None:
    damaged, healthy = _stores(tmp_path)
    _overwrite(damaged, b"not the evidence")
    repair_copy(damaged, healthy, sha256=SHA256, size=len(DATA), sha512=SHA512)
    assert damaged.path_for(SHA256).read_bytes() == DATA
    # Both bad: the put refuses the source and the target keeps what it had.
    bad = MemoryBlobStore("bad")
    bad.blobs[SHA256] = DATA[:-1] + b"X"
    _overwrite(damaged, b"still not the evidence")
    with pytest.raises(BlobIntegrityError, match="hashes to sha256"):
        repair_copy(damaged, bad, sha256=SHA256, size=len(DATA), sha512=SHA512)
    assert damaged.path_for(SHA256).read_bytes() == b"still not the evidence"


def test_checking_and_repairing_a_large_copy_holds_only_pieces_of_it(tmp_path: Path) -> None:
    """A 48 MiB blob is checked and repaired with at most a few MiB allocated at once:
    copies are streamed, never held whole."""
    import tracemalloc

    size = 48 * 1024 * 1024
    source = tmp_path / "big"
    with source.open("wb") as out:
        for i in range(48):
            out.write(bytes([i]) * (1024 * 1024))
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    sha512 = hashlib.sha512(source.read_bytes()).hexdigest()
    healthy, damaged = LocalBlobStore(tmp_path / "a"), LocalBlobStore(tmp_path / "b")
    for store in (healthy, damaged):
        store.put_file(source, sha256=sha256, size=size, sha512=sha512)
    path = damaged.path_for(sha256)
    os.chmod(path, 0o644)
    with path.open("r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\xff")
    tracemalloc.start()
    try:
        assert check_copy(damaged, sha256, size=size, sha512=sha512).state == "altered"
        repair_copy(damaged, healthy, sha256=sha256, size=size, sha512=sha512)
        assert check_copy(damaged, sha256, size=size, sha512=sha512).ok
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak
