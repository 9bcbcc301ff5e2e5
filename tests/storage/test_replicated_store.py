"""ReplicatedBlobStore: every store must hold a blob, failures name the store, reads fall
back to the next store."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pytest

from storage import (
    BlobIntegrityError,
    BlobNotFound,
    LocalBlobStore,
    MemoryBlobStore,
    ReplicatedBlobStore,
    S3BlobStore,
    StorageError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

DATA = b"a witness statement, recorded\n" * 40
SHA = hashlib.sha256(DATA).hexdigest()
SIZE = len(DATA)


class _RefusingStore(MemoryBlobStore):
    """A memory store whose writes are refused, as a full or read-only backend would."""

    def put_stream(
        self, stream: BinaryIO, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        raise StoreUnavailable("disk full")

    def put_file(
        self, path: Path, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        raise StoreUnavailable("disk full")


class _OneWayStream(io.RawIOBase):
    """A readable stream that cannot seek, like a socket or a pipe."""

    def __init__(self, data: bytes) -> None:
        super().__init__()
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class _UnreachableStore(MemoryBlobStore):
    """A memory store that cannot be reached for reads."""

    def open(self, sha256: str) -> BinaryIO:
        raise StoreUnavailable(f"{self.name}: connection refused")


def _read(store: ReplicatedBlobStore, sha256: str) -> bytes:
    with store.open(sha256) as stream:
        return stream.read()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A file holding DATA."""
    path = tmp_path / "statement.txt"
    path.write_bytes(DATA)
    return path


def test_put_stores_a_verified_copy_on_every_store(tmp_path: Path, source: Path) -> None:
    """put_file lands the blob on every store; exists() is true only while all hold it."""
    local, memory = LocalBlobStore(tmp_path / "blobs"), MemoryBlobStore()
    store = ReplicatedBlobStore([local, memory])
    store.put_file(source, sha256=SHA, size=SIZE)
    assert local.exists(SHA)
    assert memory.blobs[SHA] == DATA
    assert store.exists(SHA)
    del memory.blobs[SHA]
    assert local.exists(SHA)
    assert not store.exists(SHA)


def test_put_stream_rewinds_a_seekable_stream_for_each_store(tmp_path: Path) -> None:
    """Each store reads the stream from where it stood when put_stream was called."""
    first, second = MemoryBlobStore("first"), MemoryBlobStore("second")
    stream = io.BytesIO(b"header" + DATA)
    stream.seek(len(b"header"))
    ReplicatedBlobStore([first, second]).put_stream(stream, sha256=SHA, size=SIZE)
    assert first.blobs[SHA] == DATA
    assert second.blobs[SHA] == DATA


def test_put_stream_on_several_stores_refuses_a_non_seekable_stream() -> None:
    """A stream that cannot be rewound cannot feed several stores: ValueError, before any
    store is written."""
    first, second = MemoryBlobStore("first"), MemoryBlobStore("second")
    unseekable = io.BufferedReader(_OneWayStream(DATA))
    with pytest.raises(ValueError, match="needs a seekable stream"):
        ReplicatedBlobStore([first, second]).put_stream(unseekable, sha256=SHA, size=SIZE)
    assert first.blobs == {}
    assert second.blobs == {}


def test_a_failing_store_fails_the_put_naming_that_store(source: Path) -> None:
    """When one store refuses, the put raises the same kind of error naming that store;
    the copy already made on the store before it stays."""
    good, bad = MemoryBlobStore("mirror-a"), _RefusingStore("mirror-b")
    store = ReplicatedBlobStore([good, bad])
    with pytest.raises(StoreUnavailable, match=rf"blob {SHA} not stored on mirror-b: disk full"):
        store.put_file(source, sha256=SHA, size=SIZE)
    assert good.exists(SHA)
    assert not store.exists(SHA)


def test_an_unreachable_s3_store_fails_the_put_naming_it(
    make_s3_client: Callable[..., S3Client], refusing_endpoint: str, tmp_path: Path, source: Path
) -> None:
    """A local store plus an S3 store nobody answers for: StoreUnavailable naming the S3
    store; the local copy stays."""
    local = LocalBlobStore(tmp_path / "blobs")
    s3 = S3BlobStore(make_s3_client(refusing_endpoint), bucket="offsite")
    store = ReplicatedBlobStore([local, s3])
    assert store.name == f"replicated(local:{tmp_path / 'blobs'}, s3://offsite/)"
    with pytest.raises(StoreUnavailable, match=r"not stored on s3://offsite/: .*cannot reach"):
        store.put_file(source, sha256=SHA, size=SIZE)
    assert local.exists(SHA)


def test_a_bad_source_is_refused_as_an_integrity_error(source: Path) -> None:
    """A source that does not match its sha256 is BlobIntegrityError, nothing stored."""
    first, second = MemoryBlobStore("first"), MemoryBlobStore("second")
    wrong = hashlib.sha256(b"not this").hexdigest()
    with pytest.raises(BlobIntegrityError, match=rf"blob {wrong} not stored on first"):
        ReplicatedBlobStore([first, second]).put_file(source, sha256=wrong, size=SIZE)
    assert first.blobs == {}
    assert second.blobs == {}


def test_open_falls_back_to_the_next_store_holding_the_blob() -> None:
    """A store lacking the blob, or unreachable, is skipped; the next one serves it."""
    empty, unreachable, holder = (
        MemoryBlobStore("empty"),
        _UnreachableStore("down"),
        MemoryBlobStore("holder"),
    )
    holder.blobs[SHA] = DATA
    assert _read(ReplicatedBlobStore([empty, unreachable, holder]), SHA) == DATA


def test_open_with_no_store_holding_the_blob_is_blob_not_found_naming_all() -> None:
    """BlobNotFound names every store when none holds the blob."""
    store = ReplicatedBlobStore([MemoryBlobStore("one"), MemoryBlobStore("two")])
    with pytest.raises(BlobNotFound, match=rf"replicated\(one, two\): blob {SHA} is missing"):
        _read(store, SHA)


def test_open_when_stores_are_down_is_store_unavailable() -> None:
    """When no store could serve the blob and one was unreachable, the error says so
    rather than claiming the blob is missing."""
    store = ReplicatedBlobStore([MemoryBlobStore("one"), _UnreachableStore("down")])
    with pytest.raises(StoreUnavailable, match=rf"no store could serve blob {SHA}: .*down"):
        _read(store, SHA)


def test_iter_blobs_is_the_sorted_union_without_duplicates() -> None:
    """Every blob held by any store is listed once, in ascending order."""
    first, second = MemoryBlobStore("first"), MemoryBlobStore("second")
    shas = sorted(hashlib.sha256(bytes([i])).hexdigest() for i in range(3))
    first.blobs = {shas[0]: b"", shas[1]: b""}
    second.blobs = {shas[1]: b"", shas[2]: b""}
    assert list(ReplicatedBlobStore([first, second]).iter_blobs()) == shas


def test_no_store_at_all_is_refused() -> None:
    """A replicated store of nothing would accept writes it cannot keep: ValueError."""
    with pytest.raises(ValueError, match="at least one store"):
        ReplicatedBlobStore([])


def test_errors_are_storage_errors() -> None:
    """Callers catch one family: every storage error derives from StorageError."""
    for kind in (BlobNotFound, BlobIntegrityError, StoreUnavailable):
        assert issubclass(kind, StorageError)
