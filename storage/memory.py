"""An in-memory blob store: the real fake for tests (same semantics as the others)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage._streams import Expected, copy_checked, open_source, refuse_held
from storage.base import check_sha256
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

    def put_file(
        self, path: Path, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Store the file at ``path`` as blob ``sha256`` (see :class:`storage.BlobStore`).

        Raises ValueError (malformed sha256, size or sha512), BlobIntegrityError (nothing
        stored), StorageError (``path`` cannot be read).
        """
        expected = Expected.create(sha256=sha256, size=size, sha512=sha512)
        if self._holds_intact(expected):
            return
        with open_source(path, expected=expected, store=self.name) as source:
            self._write(source, expected)

    def put_stream(
        self, stream: BinaryIO, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Store what ``stream`` yields as blob ``sha256``. Raises as :meth:`put_file`."""
        expected = Expected.create(sha256=sha256, size=size, sha512=sha512)
        if self._holds_intact(expected):
            return
        self._write(stream, expected)

    def _holds_intact(self, expected: Expected) -> bool:
        """Whether an intact copy is held. Raises BlobIntegrityError when it is but does
        not hash to the expected sha512 (the caller's digests disagree)."""
        held = self.blobs.get(expected.sha256)
        if held is None or _measure(held) != (expected.sha256, expected.size):
            return False
        if expected.sha512 is not None:
            refuse_held(expected, hashlib.sha512(held).hexdigest(), store=self.name)
        return True

    def _write(self, source: BinaryIO, expected: Expected) -> None:
        buffer = bytearray()
        copy_checked(source, buffer.extend, expected=expected, store=self.name)
        data = bytes(buffer)
        # Verify after write, as the other stores do: cheap here, and it keeps the fake's
        # contract identical to theirs.
        if _measure(data) != (expected.sha256, expected.size):
            raise BlobIntegrityError(
                f"{self.name}: verify after write failed for blob {expected.sha256}"
            )
        self.blobs[expected.sha256] = data

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


def _measure(data: bytes) -> tuple[str, int]:
    return hashlib.sha256(data).hexdigest(), len(data)
