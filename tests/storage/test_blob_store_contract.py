"""The BlobStore contract, pinned once and run against every store: local, memory, S3 (on
a moto server) and a replicated local+memory pair."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from storage import (
    BlobIntegrityError,
    BlobNotFound,
    BlobStore,
    LocalBlobStore,
    MemoryBlobStore,
    ReplicatedBlobStore,
    S3BlobStore,
)

DATA = b"video frames of a shelling, as captured\n" * 100
SHA = hashlib.sha256(DATA).hexdigest()
OTHER = b"a different capture"
OTHER_SHA = hashlib.sha256(OTHER).hexdigest()
SHA512 = hashlib.sha512(DATA).hexdigest()
OTHER_SHA512 = hashlib.sha512(OTHER).hexdigest()


@pytest.fixture(params=["local", "memory", "s3", "replicated"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """Each kind of store, fresh and empty."""
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    if request.param == "memory":
        return MemoryBlobStore()
    if request.param == "s3":
        make: Callable[..., S3BlobStore] = request.getfixturevalue("make_s3_store")
        return make(prefix="evidence")
    return ReplicatedBlobStore([LocalBlobStore(tmp_path / "blobs"), MemoryBlobStore()])


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A file holding DATA."""
    path = tmp_path / "capture.bin"
    path.write_bytes(DATA)
    return path


def _read(store: BlobStore, sha256: str) -> bytes:
    with store.open(sha256) as stream:
        return stream.read()


def _put(
    store: BlobStore, via: str, source: Path, sha256: str, size: int, sha512: str | None = None
) -> None:
    """Put the bytes of ``source`` through put_file or put_stream."""
    if via == "file":
        store.put_file(source, sha256=sha256, size=size, sha512=sha512)
    else:
        store.put_stream(
            io.BytesIO(source.read_bytes()), sha256=sha256, size=size, sha512=sha512
        )


def _assert_absent(store: BlobStore, sha256: str) -> None:
    assert not store.exists(sha256)
    with pytest.raises(BlobNotFound, match=sha256):
        _read(store, sha256)
    assert sha256 not in set(store.iter_blobs())


def test_put_file_then_open_returns_identical_bytes(store: BlobStore, source: Path) -> None:
    """A stored file reads back byte for byte under its sha256."""
    store.put_file(source, sha256=SHA, size=len(DATA))
    assert store.exists(SHA)
    assert _read(store, SHA) == DATA


def test_put_stream_then_open_returns_identical_bytes(store: BlobStore) -> None:
    """A stored stream reads back byte for byte under its sha256."""
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=len(DATA))
    assert _read(store, SHA) == DATA


def test_empty_blob_roundtrips(store: BlobStore) -> None:
    """A zero-byte blob is a blob like any other."""
    empty_sha = hashlib.sha256(b"").hexdigest()
    store.put_stream(io.BytesIO(b""), sha256=empty_sha, size=0)
    assert store.exists(empty_sha)
    assert _read(store, empty_sha) == b""


@pytest.mark.parametrize("via", ["file", "stream"])
def test_source_with_wrong_sha256_is_refused_and_nothing_stored(
    store: BlobStore, source: Path, via: str
) -> None:
    """Bytes that do not hash to the promised sha256 are refused; nothing is stored."""
    with pytest.raises(BlobIntegrityError, match=rf"blob {OTHER_SHA}.*hashes to sha256 {SHA}"):
        _put(store, via, source, OTHER_SHA, len(DATA))
    _assert_absent(store, OTHER_SHA)
    _assert_absent(store, SHA)


@pytest.mark.parametrize("via", ["file", "stream"])
@pytest.mark.parametrize("claimed", [len(DATA) - 1, len(DATA) + 1])
def test_source_with_wrong_size_is_refused_and_nothing_stored(
    store: BlobStore, source: Path, via: str, claimed: int
) -> None:
    """A source longer or shorter than the promised size is refused; nothing is stored."""
    expected = rf"refused blob {SHA}: .*(expected {claimed}|longer than the expected {claimed})"
    with pytest.raises(BlobIntegrityError, match=expected):
        _put(store, via, source, SHA, claimed)
    _assert_absent(store, SHA)


@pytest.mark.parametrize("via", ["file", "stream"])
def test_source_with_the_given_sha512_is_stored(store: BlobStore, source: Path, via: str) -> None:
    """A put given the right sha512 as well stores the blob under its sha256."""
    _put(store, via, source, SHA, len(DATA), SHA512)
    assert _read(store, SHA) == DATA


@pytest.mark.parametrize("via", ["file", "stream"])
def test_source_with_wrong_sha512_is_refused_and_nothing_stored(
    store: BlobStore, source: Path, via: str
) -> None:
    """Bytes with the promised sha256 and size but not the promised sha512 are refused,
    naming both SHA-512 digests; nothing is stored."""
    expected = (
        rf"refused blob {SHA}: the source hashes to sha512 {SHA512}, "
        f"not the expected {OTHER_SHA512}"
    )
    with pytest.raises(BlobIntegrityError, match=expected):
        _put(store, via, source, SHA, len(DATA), OTHER_SHA512)
    _assert_absent(store, SHA)


def test_held_blob_with_a_different_sha512_is_refused_and_kept(
    store: BlobStore, source: Path
) -> None:
    """Putting a held blob with a sha512 its bytes do not have is refused (the digests
    given disagree); the held blob stays as it was."""
    store.put_file(source, sha256=SHA, size=len(DATA))
    with pytest.raises(BlobIntegrityError, match="digests given do not describe the same bytes"):
        store.put_stream(io.BytesIO(DATA), sha256=SHA, size=len(DATA), sha512=OTHER_SHA512)
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=len(DATA), sha512=SHA512)
    assert _read(store, SHA) == DATA


@pytest.mark.parametrize("bad", [SHA512.upper(), SHA512[:127], SHA, ""],
                         ids=["upper", "short", "sha256", "empty"])
def test_malformed_sha512_is_refused(store: BlobStore, source: Path, bad: str) -> None:
    """A sha512 that is not 128 lower-case hex characters is a ValueError."""
    with pytest.raises(ValueError, match="not a SHA-512 digest"):
        store.put_file(source, sha256=SHA, size=len(DATA), sha512=bad)
    with pytest.raises(ValueError, match="not a SHA-512 digest"):
        store.put_stream(io.BytesIO(DATA), sha256=SHA, size=len(DATA), sha512=bad)
    _assert_absent(store, SHA)


def test_putting_the_same_blob_twice_is_fine(store: BlobStore, source: Path) -> None:
    """A second put of a blob already held succeeds and changes nothing."""
    store.put_file(source, sha256=SHA, size=len(DATA))
    store.put_file(source, sha256=SHA, size=len(DATA))
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=len(DATA))
    assert _read(store, SHA) == DATA
    assert list(store.iter_blobs()) == [SHA]


def test_iter_blobs_lists_every_blob_put_in_order(store: BlobStore) -> None:
    """iter_blobs yields the sha256 of exactly the blobs put, ascending."""
    assert list(store.iter_blobs()) == []
    store.put_stream(io.BytesIO(DATA), sha256=SHA, size=len(DATA))
    store.put_stream(io.BytesIO(OTHER), sha256=OTHER_SHA, size=len(OTHER))
    assert list(store.iter_blobs()) == sorted([SHA, OTHER_SHA])


@pytest.mark.parametrize(
    "bad",
    [SHA.upper(), SHA[:63], SHA + "0", "g" * 64, "../" + SHA[3:], "", f"{SHA[:62]}\n0"],
    ids=["upper", "short", "long", "not-hex", "path", "empty", "newline"],
)
def test_malformed_sha256_is_refused(store: BlobStore, source: Path, bad: str) -> None:
    """Every method refuses an address that is not 64 lower-case hex characters."""
    message = "not a SHA-256 digest"
    with pytest.raises(ValueError, match=message):
        store.put_file(source, sha256=bad, size=len(DATA))
    with pytest.raises(ValueError, match=message):
        store.put_stream(io.BytesIO(DATA), sha256=bad, size=len(DATA))
    with pytest.raises(ValueError, match=message):
        _read(store, bad)
    with pytest.raises(ValueError, match=message):
        store.exists(bad)


def test_missing_blob_is_blob_not_found_naming_store_and_sha(store: BlobStore) -> None:
    """Opening a blob the store lacks raises BlobNotFound naming the store and the sha."""
    with pytest.raises(BlobNotFound) as caught:
        _read(store, SHA)
    assert SHA in str(caught.value)
    assert store.name in str(caught.value)
    assert not store.exists(SHA)
