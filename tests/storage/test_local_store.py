"""LocalBlobStore specifics: layout, permissions, atomic publication, repair, verify."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

from storage import BlobIntegrityError, BlobNotFound, LocalBlobStore, StorageError, StoreUnavailable

MiB = 1024 * 1024


def _blob(data: bytes) -> tuple[bytes, str, int]:
    return data, hashlib.sha256(data).hexdigest(), len(data)


DATA, SHA, SIZE = _blob(b"testimony recorded at the checkpoint\n" * 50)


class _ExplodingStream(io.RawIOBase):
    """A source that fails the test if anything reads it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        raise AssertionError("the source was read")


class _BitFlippingStore(LocalBlobStore):
    """A store whose write path flips one bit of the first chunk it writes, like bad RAM
    or a buggy driver: the source hashes fine, the bytes on disk do not."""

    def _write_chunk(self, out: BinaryIO, chunk: bytes) -> None:
        if out.tell() == 0 and chunk:
            chunk = bytes([chunk[0] ^ 0x01]) + chunk[1:]
        out.write(chunk)


def _tmp_files(root: Path) -> list[Path]:
    tmp = root / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def test_blob_lands_read_only_in_the_documented_layout(tmp_path: Path) -> None:
    """A put blob is root/sha256/ab/cd/<sha256>, mode 0o400, and nothing stays in tmp/."""
    store = LocalBlobStore(tmp_path)
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    path = tmp_path / "sha256" / SHA[:2] / SHA[2:4] / SHA
    assert store.path_for(SHA) == path
    assert path.read_bytes() == DATA
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert _tmp_files(tmp_path) == []
    assert store.name == f"local:{tmp_path}"


def test_the_store_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Under a permissive umask (022) the store still creates its directories 0700 and
    its blobs 0400: nobody but the owner can list or read the evidence."""
    root = tmp_path / "store"
    previous = os.umask(0o022)
    try:
        LocalBlobStore(root).put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    finally:
        os.umask(previous)
    blob = root / "sha256" / SHA[:2] / SHA[2:4] / SHA
    for directory in (root, root / "tmp", root / "sha256", blob.parent.parent, blob.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    assert stat.S_IMODE(blob.stat().st_mode) == 0o400


def test_directories_are_created_lazily(tmp_path: Path) -> None:
    """A store on a directory that does not exist yet creates it on the first put only."""
    root = tmp_path / "not" / "yet"
    store = LocalBlobStore(root)
    assert not store.exists(SHA)
    assert list(store.iter_blobs()) == []
    assert not root.exists()
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    assert store.exists(SHA)


def test_refused_put_leaves_no_temporary_file(tmp_path: Path) -> None:
    """A source that does not match leaves neither a blob nor a temporary file."""
    store = LocalBlobStore(tmp_path)
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(BlobIntegrityError, match=f"refused blob {wrong}"):
        store.put_stream(io.BytesIO(DATA), sha256=wrong, size=SIZE)
    with pytest.raises(BlobIntegrityError, match="longer than the expected 10 bytes"):
        store.put_stream(io.BytesIO(DATA), sha256=SHA, size=10)
    assert _tmp_files(tmp_path) == []
    assert list(store.iter_blobs()) == []


def test_damaged_copy_is_repaired_by_putting_the_good_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A second put re-hashes the held copy and replaces a damaged one with good bytes,
    logging the damage it found."""
    store = LocalBlobStore(tmp_path)
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    path = store.path_for(SHA)
    path.chmod(0o644)
    with open(path, "r+b") as damaged:
        damaged.seek(7)
        damaged.write(bytes([DATA[7] ^ 0xFF]))
    assert path.read_bytes() != DATA
    with caplog.at_level("WARNING", logger="storage.local"):
        store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    assert path.read_bytes() == DATA
    assert stat.S_IMODE(path.stat().st_mode) == 0o400
    assert f"held copy of blob {SHA} is damaged" in caplog.text


def test_truncated_copy_is_repaired_by_putting_the_good_bytes(tmp_path: Path) -> None:
    """A held copy cut short (a crash of some other tool) counts as damaged and is repaired."""
    store = LocalBlobStore(tmp_path)
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    path = store.path_for(SHA)
    path.chmod(0o644)
    os.truncate(path, SIZE // 2)
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    assert path.read_bytes() == DATA


def test_intact_copy_makes_a_put_a_no_op_that_does_not_read_the_source(tmp_path: Path) -> None:
    """Putting a blob already held intact writes nothing and never reads the source."""
    store = LocalBlobStore(tmp_path)
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    before = store.path_for(SHA).stat()
    store.put_stream(io.BufferedReader(_ExplodingStream()), sha256=SHA, size=SIZE)
    after = store.path_for(SHA).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_blob_of_several_chunks_roundtrips(tmp_path: Path) -> None:
    """A 5 MiB + 3 byte blob (several 1 MiB chunks and a ragged end) roundtrips."""
    data, sha, size = _blob(os.urandom(5 * MiB + 3))
    source = tmp_path / "video.mp4"
    source.write_bytes(data)
    store = LocalBlobStore(tmp_path / "blobs")
    store.put_file(source, sha256=sha, size=size)
    with store.open(sha) as stream:
        assert hashlib.sha256(stream.read()).hexdigest() == sha


def test_verify_after_write_catches_corruption_on_the_write_path(tmp_path: Path) -> None:
    """Bytes damaged between the hashed source and the disk are caught before the rename:
    BlobIntegrityError, no blob under its address, no temporary file."""
    data, sha, size = _blob(os.urandom(3 * MiB))
    store = _BitFlippingStore(tmp_path)
    with pytest.raises(BlobIntegrityError, match=f"verify after write failed for blob {sha}"):
        store.put_stream(io.BytesIO(data), sha256=sha, size=size)
    assert not store.exists(sha)
    assert _tmp_files(tmp_path) == []
    # The same bytes through a sound write path are stored fine.
    LocalBlobStore(tmp_path).put_stream(io.BytesIO(data), sha256=sha, size=size)
    assert store.exists(sha)


def test_concurrent_puts_of_the_same_blob_all_succeed(tmp_path: Path) -> None:
    """Eight writers putting the same blob at once all succeed; one intact copy remains."""
    data, sha, size = _blob(os.urandom(3 * MiB))
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def put() -> None:
        # Separate store objects, as separate processes would have.
        store = LocalBlobStore(tmp_path)
        barrier.wait()
        try:
            store.put_stream(io.BytesIO(data), sha256=sha, size=size)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    store = LocalBlobStore(tmp_path)
    assert store.path_for(sha).read_bytes() == data
    assert list(store.iter_blobs()) == [sha]
    assert _tmp_files(tmp_path) == []


def test_open_returns_a_read_only_file(tmp_path: Path) -> None:
    """The stream from open cannot be written through."""
    store = LocalBlobStore(tmp_path)
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    with store.open(SHA) as stream:
        assert not stream.writable()
        with pytest.raises(io.UnsupportedOperation):
            stream.write(b"x")


def test_iter_blobs_skips_entries_outside_the_layout(tmp_path: Path) -> None:
    """Stray files, misplaced blobs and temporary files are not listed as blobs."""
    store = LocalBlobStore(tmp_path)
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    other = hashlib.sha256(b"other").hexdigest()
    (tmp_path / "sha256" / "README").write_text("not a blob")
    (tmp_path / "sha256" / SHA[:2] / SHA[2:4] / "notes.txt").write_text("not a blob")
    (tmp_path / "sha256" / SHA[:2] / SHA[2:4] / other).write_bytes(b"other")  # misplaced
    (tmp_path / "tmp").mkdir(exist_ok=True)
    (tmp_path / "tmp" / other).write_bytes(b"other")
    assert list(store.iter_blobs()) == [SHA]


def test_unwritable_root_is_store_unavailable_naming_store_and_blob(tmp_path: Path) -> None:
    """A root that cannot hold directories (here: it is a file) gives StoreUnavailable."""
    root = tmp_path / "occupied"
    root.write_text("a file where the store should be")
    store = LocalBlobStore(root)
    with pytest.raises(StoreUnavailable) as caught:
        store.put_stream(io.BytesIO(DATA), sha256=SHA, size=SIZE)
    assert f"local:{root}" in str(caught.value)
    assert SHA in str(caught.value)


def test_unreadable_source_file_is_a_storage_error_naming_the_path(tmp_path: Path) -> None:
    """A source file that cannot be opened is a StorageError naming the file and blob."""
    store = LocalBlobStore(tmp_path / "blobs")
    missing = tmp_path / "gone.mp4"
    with pytest.raises(StorageError, match=rf"cannot read {missing} to store blob {SHA}") as caught:
        store.put_file(missing, sha256=SHA, size=SIZE)
    assert not isinstance(caught.value, (BlobIntegrityError, StoreUnavailable, BlobNotFound))
    assert not store.exists(SHA)


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    """What a writer killed mid-blob left in tmp/ goes once old; a fresh temporary (a
    live writer) and the stored blobs stay."""

    store = LocalBlobStore(tmp_path / "blobs")
    data = b"evidence" * 1000
    source = tmp_path / "source"
    source.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    store.put_file(source, sha256=sha, size=len(data))
    tmp = tmp_path / "blobs" / "tmp"
    old, fresh = tmp / "abandoned.part", tmp / "in-progress.part"
    old.write_bytes(b"half a video")
    fresh.write_bytes(b"being written")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert store.remove_stale_temporaries(older_than_seconds=600) == 1
    assert not old.exists()
    assert fresh.exists()
    with store.open(sha) as stream:
        assert stream.read() == data
    assert LocalBlobStore(tmp_path / "never-used").remove_stale_temporaries(
        older_than_seconds=0) == 0


# -- one pass into the store: linking on the same filesystem, copying across ------------


def _sha512(data: bytes) -> str:
    return hashlib.sha512(data).hexdigest()


@pytest.fixture
def other_filesystem() -> Iterator[Path]:
    """A directory on another filesystem than tmp_path (/dev/shm, a tmpfs)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == Path(tempfile.gettempdir()).stat().st_dev:
        pytest.skip("no /dev/shm on a filesystem of its own")
    with tempfile.TemporaryDirectory(dir=shm) as directory:
        yield Path(directory)


class _NoHardLinksStore(LocalBlobStore):
    """A store on a filesystem that refuses hard links (as FAT, or protected_hardlinks
    for a file this user does not own, would)."""

    def _link(self, source: Path, target: Path) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(source))


def _source(directory: Path, data: bytes) -> Path:
    path = directory / "capture.warc.gz"
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def _snapshot(path: Path) -> tuple[bytes, int, int, int, int]:
    """What a caller would notice changing about its file: bytes, inode, links, mode,
    mtime."""
    info = path.stat()
    return (path.read_bytes(), info.st_ino, info.st_nlink, stat.S_IMODE(info.st_mode),
            info.st_mtime_ns)


def _assert_copied(store: LocalBlobStore, source: Path, before: tuple[bytes, int, int, int, int],
                   sha: str) -> None:
    """The blob is a separate, read-only copy; the caller's file is exactly as it was."""
    stored = store.path_for(sha).stat()
    assert stored.st_ino != source.stat().st_ino
    assert stored.st_nlink == 1
    assert stat.S_IMODE(stored.st_mode) == 0o400
    assert store.path_for(sha).read_bytes() == before[0]
    assert _snapshot(source) == before
    assert _tmp_files(store.root) == []


def test_put_file_on_the_same_filesystem_links_the_source(tmp_path: Path) -> None:
    """A scratch file on the store's filesystem becomes the blob by a hard link (same
    inode, two links), read-only, with the mtime of the put; nothing stays in tmp/."""
    data, sha, size = _blob(os.urandom(2 * MiB + 5))
    source = _source(tmp_path, data)
    an_hour_ago = time.time() - 3600
    os.utime(source, (an_hour_ago, an_hour_ago))
    store = LocalBlobStore(tmp_path / "blobs")
    started = time.time()
    store.put_file(source, sha256=sha, size=size, sha512=_sha512(data))
    stored = store.path_for(sha).stat()
    assert stored.st_ino == source.stat().st_ino
    assert stored.st_nlink == 2
    assert stat.S_IMODE(stored.st_mode) == 0o400
    assert stored.st_mtime >= started - 1
    assert store.path_for(sha).read_bytes() == data
    assert _tmp_files(store.root) == []
    # The caller may delete its scratch file: the blob stays.
    source.unlink()
    with store.open(sha) as stream:
        assert stream.read() == data


def test_put_file_across_filesystems_copies_and_leaves_the_source_alone(
    tmp_path: Path, other_filesystem: Path
) -> None:
    """A source on another filesystem is copied: the blob is its own inode and the
    source keeps its bytes, links, mode and mtime."""
    data, sha, size = _blob(os.urandom(MiB + 7))
    source = _source(other_filesystem, data)
    before = _snapshot(source)
    store = LocalBlobStore(tmp_path / "blobs")
    store.put_file(source, sha256=sha, size=size, sha512=_sha512(data))
    _assert_copied(store, source, before, sha)


def test_link_sources_false_always_copies(tmp_path: Path) -> None:
    """With link_sources=False a source on the same filesystem is copied, not linked."""
    data, sha, size = _blob(os.urandom(MiB + 7))
    source = _source(tmp_path, data)
    before = _snapshot(source)
    store = LocalBlobStore(tmp_path / "blobs", link_sources=False)
    store.put_file(source, sha256=sha, size=size)
    _assert_copied(store, source, before, sha)


def test_a_filesystem_without_hard_links_falls_back_to_copying(tmp_path: Path) -> None:
    """When linking fails (EPERM here) the file is copied instead and the put succeeds."""
    data, sha, size = _blob(os.urandom(MiB + 7))
    source = _source(tmp_path, data)
    before = _snapshot(source)
    store = _NoHardLinksStore(tmp_path / "blobs")
    store.put_file(source, sha256=sha, size=size, sha512=_sha512(data))
    _assert_copied(store, source, before, sha)


def test_a_source_with_another_name_is_copied_not_linked(tmp_path: Path) -> None:
    """A file that already has a second name (it could be written through it) is not
    taken over: it is copied, and both names keep the file as it was."""
    data, sha, size = _blob(os.urandom(MiB + 7))
    source = _source(tmp_path, data)
    os.link(source, tmp_path / "second-name")
    before = _snapshot(source)
    store = LocalBlobStore(tmp_path / "blobs")
    store.put_file(source, sha256=sha, size=size)
    _assert_copied(store, source, before, sha)


def _rchar() -> int:
    """Bytes this process has read through read(2) and friends, page cache or not."""
    with open("/proc/self/io") as io_stats:
        return next(int(line.split()[1]) for line in io_stats if line.startswith("rchar:"))


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
@pytest.mark.parametrize(("link_sources", "reads"), [(True, 1), (False, 2)],
                         ids=["link", "copy"])
def test_put_file_reads_the_data_at_most_twice(
    tmp_path: Path, link_sources: bool, reads: int
) -> None:
    """Ingesting a 48 MiB file reads it once when linked (the verification) and twice
    when copied (the copy, hashed as it goes, and the verification), counted by the
    kernel's rchar for this process; 1 MiB of slack covers reads of anything else."""
    data, sha, size = _blob(os.urandom(48 * MiB))
    source = _source(tmp_path, data)
    store = LocalBlobStore(tmp_path / "blobs", link_sources=link_sources)
    before = _rchar()
    store.put_file(source, sha256=sha, size=size, sha512=_sha512(data))
    read = _rchar() - before
    assert reads * size <= read <= reads * size + MiB
    assert (store.path_for(sha).stat().st_ino == source.stat().st_ino) is link_sources


@pytest.mark.parametrize("how", ["link", "copy"])
@pytest.mark.parametrize("wrong", ["sha256", "sha512"])
def test_a_source_that_does_not_match_stores_nothing_and_is_left_intact(
    tmp_path: Path, how: str, wrong: str
) -> None:
    """Bytes that do not hash to the given sha256 or sha512 are refused, by the link
    path and by the copy path alike: BlobIntegrityError naming the digest that failed,
    no blob, nothing in tmp/, and the caller's file unchanged (bytes, inode, one link,
    mode, mtime) and still writable."""
    data = os.urandom(3 * MiB)
    sha, sha512 = hashlib.sha256(data).hexdigest(), _sha512(data)
    other = b"a different recording" * 10
    if wrong == "sha256":
        sha = hashlib.sha256(other).hexdigest()
        found = f"sha256 {hashlib.sha256(data).hexdigest()}"
    else:
        sha512 = _sha512(other)
        found = f"sha512 {_sha512(data)}, not the expected {sha512}"
    source = _source(tmp_path, data)
    before = _snapshot(source)
    store = LocalBlobStore(tmp_path / "blobs", link_sources=how == "link")
    refused = f"refused blob {sha}: the source hashes to {found}"
    with pytest.raises(BlobIntegrityError, match=refused):
        store.put_file(source, sha256=sha, size=len(data), sha512=sha512)
    assert not store.exists(sha)
    assert list(store.iter_blobs()) == []
    assert _tmp_files(store.root) == []
    assert _snapshot(source) == before
    with source.open("r+b") as still_usable:
        still_usable.write(b"x")


def test_verify_after_write_catches_corruption_on_the_copy_path_of_put_file(
    tmp_path: Path,
) -> None:
    """A corrupting write path under put_file's copy is caught before the rename: no
    blob, no temporary file, the source untouched."""
    data, sha, size = _blob(os.urandom(3 * MiB))
    source = _source(tmp_path, data)
    before = _snapshot(source)
    store = _BitFlippingStore(tmp_path / "blobs", link_sources=False)
    with pytest.raises(BlobIntegrityError, match=f"verify after write failed for blob {sha}"):
        store.put_file(source, sha256=sha, size=size, sha512=_sha512(data))
    assert not store.exists(sha)
    assert _tmp_files(store.root) == []
    assert _snapshot(source) == before


def test_concurrent_put_files_of_one_source_all_succeed(tmp_path: Path) -> None:
    """Eight writers putting the same scratch file at once all succeed (whichever of
    them links it, the others copy or find it held); one intact blob, nothing in tmp/."""
    data, sha, size = _blob(os.urandom(3 * MiB))
    source = _source(tmp_path, data)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def put() -> None:
        store = LocalBlobStore(tmp_path / "blobs")
        barrier.wait()
        try:
            store.put_file(source, sha256=sha, size=size, sha512=_sha512(data))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    store = LocalBlobStore(tmp_path / "blobs")
    assert store.path_for(sha).read_bytes() == data
    assert source.read_bytes() == data
    assert list(store.iter_blobs()) == [sha]
    assert _tmp_files(store.root) == []
