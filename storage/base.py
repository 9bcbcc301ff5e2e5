"""The :class:`BlobStore` protocol every store implements, and the digest checks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["BlobStore", "check_sha256", "check_sha512", "check_size"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_SHA512_HEX = re.compile(r"[0-9a-f]{128}")


def check_sha256(value: str) -> str:
    """Return ``value`` if it is a SHA-256 digest as 64 lower-case hex characters.

    Raises :class:`ValueError` otherwise: a malformed address is a programming error, and
    refusing it keeps odd names (``../``, upper case aliases) out of every store's layout.
    """
    if not isinstance(value, str) or _SHA256_HEX.fullmatch(value) is None:
        raise ValueError(f"not a SHA-256 digest (64 lower-case hex characters): {value!r}")
    return value


def check_sha512(value: str | None) -> str | None:
    """Return ``value`` if it is None or a SHA-512 digest as 128 lower-case hex characters.

    Raises :class:`ValueError` otherwise (a programming error, like a malformed sha256).
    """
    if value is not None and (not isinstance(value, str) or _SHA512_HEX.fullmatch(value) is None):
        raise ValueError(f"not a SHA-512 digest (128 lower-case hex characters): {value!r}")
    return value


def check_size(value: int) -> int:
    """Return ``value`` if it is a non-negative int byte count, else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"not a blob size (a non-negative number of bytes): {value!r}")
    return value


class BlobStore(Protocol):
    """A content-addressed store: a blob's address is the SHA-256 of its bytes.

    Put semantics, shared by every implementation:

    * The bytes read from the source must hash to ``sha256`` and be exactly ``size``
      bytes, and when the caller passes ``sha512`` (it has it from sealing) they must
      hash to that too; this is checked as the source is read, and a mismatch is
      refused with :class:`~storage.errors.BlobIntegrityError` leaving nothing stored.
      A blob already
      held whose bytes do not hash to the given ``sha512`` is refused the same way (the
      two digests the caller gave do not describe the same bytes).
    * After writing, the store re-reads what it stored and re-hashes it (verify after
      write); only a verified copy becomes visible under its address.
    * Putting a blob that is already held and intact is a no-op that writes nothing; a
      damaged copy already held is replaced by the good bytes (a repair, never an
      overwrite of different evidence: the new bytes hash to the same address).

    Every method raises :class:`ValueError` for a malformed sha256 (see
    :func:`check_sha256`; a put also for a malformed size or sha512), and
    :class:`~storage.errors.StoreUnavailable` when the backend cannot be reached or
    refuses the operation.
    """

    @property
    def name(self) -> str:
        """A human label naming the store, e.g. ``local:/srv/blobs`` or ``s3://b/p/``."""
        ...

    def put_file(
        self, path: Path, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Store the file at ``path`` as blob ``sha256``.

        The caller must not modify the file at ``path`` in place afterwards (deleting or
        replacing it is fine): a local store may keep it as the stored copy itself, by a
        hard link (see :class:`storage.LocalBlobStore`).

        Raises BlobIntegrityError (the file does not match, or the stored copy failed
        verification), StoreUnavailable, or StorageError (the file cannot be read).
        """
        ...

    def put_stream(
        self, stream: BinaryIO, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Store the bytes read from ``stream`` (to its end) as blob ``sha256``.

        Raises as :meth:`put_file`.
        """
        ...

    def open(self, sha256: str) -> AbstractContextManager[BinaryIO]:
        """Open blob ``sha256`` for reading.

        The bytes are not re-hashed on the way out: a caller that must trust them hashes
        them itself. Raises BlobNotFound, StoreUnavailable.
        """
        ...

    def exists(self, sha256: str) -> bool:
        """Whether the store holds blob ``sha256`` (without re-hashing it).

        Raises StoreUnavailable.
        """
        ...

    def iter_blobs(self) -> Iterator[str]:
        """Yield the sha256 of every blob held, for fixity audits.

        Raises StoreUnavailable.
        """
        ...
