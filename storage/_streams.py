"""Stream helpers shared by the stores: what a put was promised, copy while hashing, hash
a stream.

Everything moves in :data:`CHUNK_SIZE` pieces so a 2 GiB video is never held in memory.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from storage.base import check_sha256, check_sha512, check_size
from storage.errors import BlobIntegrityError, StorageError

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Expected:
    """What a put was promised: the blob's address (its SHA-256), its length and,
    when the caller has it, its SHA-512. Checked by :meth:`create`."""

    sha256: str
    size: int
    sha512: str | None = None

    @classmethod
    def create(cls, *, sha256: str, size: int, sha512: str | None) -> Expected:
        """Raises ValueError for a malformed sha256, size or sha512."""
        return cls(check_sha256(sha256), check_size(size), check_sha512(sha512))


@dataclass(frozen=True, slots=True)
class Measured:
    """What some bytes were found to be: SHA-256, length and, when it was asked for,
    SHA-512 (None when not computed)."""

    sha256: str
    size: int
    sha512: str | None = None


class Hasher:
    """SHA-256 and byte count of what it is fed, plus SHA-512 when asked for."""

    __slots__ = ("_sha256", "_sha512", "size")

    def __init__(self, *, sha512: bool) -> None:
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512() if sha512 else None
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self._sha256.update(chunk)
        if self._sha512 is not None:
            self._sha512.update(chunk)
        self.size += len(chunk)

    def measured(self) -> Measured:
        return Measured(
            self._sha256.hexdigest(),
            self.size,
            None if self._sha512 is None else self._sha512.hexdigest(),
        )


def refuse_source(expected: Expected, got: Measured, *, store: str) -> None:
    """Raise BlobIntegrityError if the bytes read from a put's source (``got``) are not
    the promised ones; the message says which check failed."""
    sha256 = expected.sha256
    if got.size != expected.size:
        raise BlobIntegrityError(
            f"{store}: refused blob {sha256}: the source has {got.size} bytes, "
            f"expected {expected.size}"
        )
    if got.sha256 != sha256:
        raise BlobIntegrityError(
            f"{store}: refused blob {sha256}: the source hashes to sha256 {got.sha256}"
        )
    # A sha512 not computed (None) when one was expected is refused too: failing closed.
    if expected.sha512 is not None and got.sha512 != expected.sha512:
        raise BlobIntegrityError(
            f"{store}: refused blob {sha256}: the source hashes to sha512 {got.sha512}, "
            f"not the expected {expected.sha512}"
        )


def refuse_held(expected: Expected, held_sha512: str, *, store: str) -> None:
    """Raise BlobIntegrityError if a held copy, already found to have the expected
    sha256 and size, does not hash to the expected sha512: the two digests the caller
    gave do not describe the same bytes, so one of them is wrong (nothing is changed)."""
    if expected.sha512 is not None and held_sha512 != expected.sha512:
        raise BlobIntegrityError(
            f"{store}: refused blob {expected.sha256}: the copy held under that sha256 "
            f"hashes to sha512 {held_sha512}, not the expected {expected.sha512}; the "
            "digests given do not describe the same bytes"
        )


def copy_checked(
    source: BinaryIO,
    sink: Callable[[bytes], None],
    *,
    expected: Expected,
    store: str,
) -> None:
    """Read ``source`` to its end, passing every chunk to ``sink``, and check that the
    bytes read are the ``expected`` ones: exactly ``size`` of them, hashing to
    ``sha256`` and, when it is given, to ``sha512``.

    The digest and the length are checked together: a digest alone invites truncation
    tricks, a length alone catches nothing. A source longer than ``size`` is refused as
    soon as it overflows, so a runaway stream cannot fill memory or disk.

    Raises BlobIntegrityError on a mismatch (the sink has then seen bytes that must be
    discarded), StorageError when the source cannot be read. Exceptions raised by
    ``sink`` propagate unchanged.
    """
    hasher = Hasher(sha512=expected.sha512 is not None)
    while True:
        try:
            chunk = source.read(CHUNK_SIZE)
        except OSError as exc:
            raise StorageError(
                f"{store}: cannot read the source of blob {expected.sha256}: {exc}"
            ) from exc
        if not chunk:
            break
        if hasher.size + len(chunk) > expected.size:
            raise BlobIntegrityError(
                f"{store}: refused blob {expected.sha256}: the source is longer than the "
                f"expected {expected.size} bytes"
            )
        hasher.update(chunk)
        sink(chunk)
    refuse_source(expected, hasher.measured(), store=store)


def hash_stream(stream: BinaryIO, *, sha512: bool = False) -> Measured:
    """Hash what ``stream`` yields up to its end (SHA-512 too when asked for).

    Exceptions raised by ``stream.read`` propagate unchanged.
    """
    hasher = Hasher(sha512=sha512)
    while chunk := stream.read(CHUNK_SIZE):
        hasher.update(chunk)
    return hasher.measured()


def open_source(path: Path, *, expected: Expected, store: str) -> BinaryIO:
    """Open the file to be stored as blob ``expected.sha256``, refusing at once a regular
    file of the wrong length (before a 2 GiB upload is wasted on it).

    The caller closes the returned file. Raises StorageError (``path`` cannot be read),
    BlobIntegrityError (wrong length).
    """
    sha256 = expected.sha256
    try:
        source = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        info = os.fstat(source.fileno())
    except OSError as exc:
        raise StorageError(f"{store}: cannot read {path} to store blob {sha256}: {exc}") from exc
    if stat.S_ISREG(info.st_mode) and info.st_size != expected.size:
        source.close()
        raise BlobIntegrityError(
            f"{store}: refused blob {sha256}: {path} has {info.st_size} bytes, "
            f"expected {expected.size}"
        )
    return source
