"""An in-memory blob store: the real fake for tests (same semantics as the others)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage._streams import copy_checked, open_source
from storage.base import check_sha256, check_size
from storage.errors import BlobIntegrityError, BlobNotFound

__all__ = ["MemoryBlobStore"]


class MemoryBlobStore:
    """Blobs held as bytes in :attr:`blobs`, a dict from sha256 to bytes.

    :attr:`blobs` is public so tests can damage or inspect a stored copy directly; the
    application never touches it. Holding whole blobs in memory is the point of a fake.
    """

    def __init__(self, name: str = "memory") -> None:
        self._name = name
        self.blobs: dict[str, bytes] = {}

    @property
    def name(self) -> str:
        """The label given at construction (default ``memory``)."""
        return self._name

    def __repr__(self) -> str:
        return f"MemoryBlobStore({self._name!r})"

    def put_file(self, path: Path, *, sha256: str, size: int) -> None:
        """Store the file at ``path`` as blob ``sha256`` (see :class:`storage.BlobStore`).

        Raises ValueError, BlobIntegrityError (nothing stored), StorageError (``path``
        cannot be read).
        """
        check_sha256(sha256)
        check_size(size)
        if self._holds_intact(sha256, size):
            return
        source = open_source(path, sha256=sha256, size=size, store=self.name)
        with source:
            self._write(source, sha256, size)

    def put_stream(self, stream: BinaryIO, *, sha256: str, size: int) -> None:
        """Store what ``stream`` yields as blob ``sha256``. Raises as :meth:`put_file`."""
        check_sha256(sha256)
        check_size(size)
        if self._holds_intact(sha256, size):
            return
        self._write(stream, sha256, size)

    def _holds_intact(self, sha256: str, size: int) -> bool:
        held = self.blobs.get(sha256)
        return held is not None and _bytes_match(held, sha256, size)

    def _write(self, source: BinaryIO, sha256: str, size: int) -> None:
        buffer = bytearray()
        copy_checked(source, buffer.extend, sha256=sha256, size=size, store=self.name)
        data = bytes(buffer)
        # Verify after write, as the other stores do: cheap here, and it keeps the fake's
        # contract identical to theirs.
        if not _bytes_match(data, sha256, size):
            raise BlobIntegrityError(f"{self.name}: verify after write failed for blob {sha256}")
        self.blobs[sha256] = data

    def open(self, sha256: str) -> BinaryIO:
        """A stream over a copy of blob ``sha256``. Raises ValueError, BlobNotFound."""
        check_sha256(sha256)
        try:
            return io.BytesIO(self.blobs[sha256])
        except KeyError:
            raise BlobNotFound(f"{self.name}: blob {sha256} is missing") from None

    def exists(self, sha256: str) -> bool:
        """Whether blob ``sha256`` is held (not re-hashed). Raises ValueError."""
        check_sha256(sha256)
        return sha256 in self.blobs

    def iter_blobs(self) -> Iterator[str]:
        """Yield the sha256 of every blob held, in ascending order (a snapshot)."""
        yield from sorted(self.blobs)


def _bytes_match(data: bytes, sha256: str, size: int) -> bool:
    return len(data) == size and hashlib.sha256(data).hexdigest() == sha256
