"""Fixity of stored copies: re-read one copy of a blob and judge it, repair one from
another.

The expected digests come from the caller (the archive takes them from signed
manifests); this module only streams bytes and compares. A copy is read in
:data:`~storage._streams.CHUNK_SIZE` pieces and never held whole, and reading stops as
soon as a copy runs past its expected length, so a huge object swapped in under a
blob's address costs no more than the blob itself.

A repair is an ordinary put of the healthy copy's bytes into the damaged store: the
target store checks them against the expected SHA-256, SHA-512 and length while
copying and verifies what it wrote, so bytes that are not the evidence are refused and
never installed (see :class:`storage.BlobStore`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from storage._streams import CHUNK_SIZE, Hasher, Measured
from storage.base import BlobStore, check_sha256, check_sha512
from storage.errors import BlobIntegrityError, BlobNotFound, StorageError

__all__ = ["CopyCheck", "CopyState", "check_copy", "repair_copy"]

CopyState = Literal["ok", "missing", "altered", "unreadable"]


@dataclass(frozen=True, slots=True)
class CopyCheck:
    """What one store's copy of a blob was found to be.

    ``state``: ``ok`` (every expected value matched), ``missing`` (the store holds no
    copy), ``altered`` (the bytes differ: ``detail`` says in what), ``unreadable`` (the
    store could not be read; the copy may be fine). ``measured`` is what was read when
    the whole copy was read (None otherwise), ``bytes_read`` how many bytes that took.
    """

    store: str
    sha256: str
    state: CopyState
    detail: str = ""
    measured: Measured | None = None
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return self.state == "ok"


def check_copy(
    store: BlobStore,
    sha256: str,
    *,
    size: int | None = None,
    sha512: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> CopyCheck:
    """Re-read ``store``'s copy of blob ``sha256`` and compare it with the SHA-256 (its
    address), and with ``size`` and ``sha512`` when given. ``on_bytes`` is told the
    length of every piece read (progress).

    Never raises for what the store holds or cannot serve: that is the answer. Raises
    ValueError for a malformed sha256 or sha512 (a programming error).
    """
    check_sha256(sha256)
    check_sha512(sha512)
    hasher = Hasher(sha512=True)
    limit = None if size is None else size + 1
    try:
        with store.open(sha256) as stream:
            while chunk := stream.read(CHUNK_SIZE if limit is None
                                       else min(CHUNK_SIZE, limit - hasher.size)):
                hasher.update(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                if limit is not None and hasher.size >= limit:
                    break
    except BlobNotFound:
        return CopyCheck(store.name, sha256, "missing", "no copy is held",
                         bytes_read=hasher.size)
    except BlobIntegrityError as exc:
        # The store's own checksum (S3's) disagrees with the bytes it served.
        return CopyCheck(store.name, sha256, "altered", str(exc), bytes_read=hasher.size)
    except (StorageError, OSError) as exc:
        return CopyCheck(store.name, sha256, "unreadable", str(exc), bytes_read=hasher.size)
    got = hasher.measured()
    if size is not None and got.size > size:
        return CopyCheck(store.name, sha256, "altered",
                         f"longer than the expected {size} bytes", bytes_read=got.size)
    differ = [
        what
        for what, found, wanted in (
            ("size", got.size, size),
            ("sha256", got.sha256, sha256),
            ("sha512", got.sha512, sha512),
        )
        if wanted is not None and found != wanted
    ]
    if differ:
        return CopyCheck(store.name, sha256, "altered",
                         f"{', '.join(differ)} differ ({got.size} bytes hashing to sha256 "
                         f"{got.sha256})", got, got.size)
    return CopyCheck(store.name, sha256, "ok", "", got, got.size)


def repair_copy(
    target: BlobStore, source: BlobStore, *, sha256: str, size: int, sha512: str
) -> None:
    """Replace ``target``'s missing or damaged copy of blob ``sha256`` with the bytes
    ``source`` serves, streamed.

    The bytes must be exactly ``size`` long and hash to ``sha256`` and ``sha512``:
    ``target`` checks that while it copies and verifies what it wrote, so a source that
    went bad meanwhile is refused and nothing is installed.

    Raises ValueError (malformed digests or size), BlobNotFound (``source`` no longer
    holds it), BlobIntegrityError (the source's bytes are not the expected ones),
    StoreUnavailable (either store cannot be read or written, for example when the
    target refuses the write), StorageError.
    """
    with source.open(sha256) as stream:
        target.put_stream(stream, sha256=sha256, size=size, sha512=sha512)
