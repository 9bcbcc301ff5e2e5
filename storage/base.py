"""The :class:`BlobStore` protocol every store implements, and the sha256 check."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol

__all__ = ["BlobStore", "check_sha256", "check_size"]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def check_sha256(value: str) -> str:
    """Return ``value`` if it is a SHA-256 digest as 64 lower-case hex characters.

    Raises :class:`ValueError` otherwise: a malformed address is a programming error, and
    refusing it keeps odd names (``../``, upper case aliases) out of every store's layout.
    """
    if not isinstance(value, str) or _SHA256_HEX.fullmatch(value) is None:
        raise ValueError(f"not a SHA-256 digest (64 lower-case hex characters): {value!r}")
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
      bytes; this is checked while copying, and a mismatch is refused with
      :class:`~storage.errors.BlobIntegrityError` leaving nothing stored.
    * After writing, the store re-reads what it stored and re-hashes it (verify after
      write); only a verified copy becomes visible under its address.
    * Putting a blob that is already held and intact is a no-op that writes nothing; a
      damaged copy already held is replaced by the good bytes (a repair, never an
      overwrite of different evidence: the new bytes hash to the same address).

    Every method raises :class:`ValueError` for a malformed sha256 (see
    :func:`check_sha256`), and :class:`~storage.errors.StoreUnavailable` when the backend
    cannot be reached or refuses the operation.
    """

    @property
    def name(self) -> str:
        """A human label naming the store, e.g. ``local:/srv/blobs`` or ``s3://b/p/``."""
        ...

    def put_file(self, path: Path, *, sha256: str, size: int) -> None:
        """Store the file at ``path`` as blob ``sha256``.

        Raises BlobIntegrityError (the file does not match, or the stored copy failed
        verification), StoreUnavailable, or StorageError (the file cannot be read).
        """
        ...

    def put_stream(self, stream: BinaryIO, *, sha256: str, size: int) -> None:
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
