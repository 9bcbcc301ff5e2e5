"""Digests computed while bytes stream through, never by holding a payload in memory.

A digest always travels with the length it covers (``Digest.size``): a hash without a
length invites truncation games.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Digest:
    """SHA-256 and SHA-512 (lower-case hex) of exactly ``size`` bytes."""

    sha256: str
    sha512: str
    size: int

    def as_dict(self) -> dict[str, str | int]:
        return {"sha256": self.sha256, "sha512": self.sha512, "size": self.size}


class Hasher:
    """Feed bytes in any number of pieces; read the :class:`Digest` at the end."""

    __slots__ = ("_sha256", "_sha512", "_size")

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512()
        self._size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._sha256.update(data)
        self._sha512.update(data)
        self._size += len(data)

    @property
    def size(self) -> int:
        return self._size

    def digest(self) -> Digest:
        return Digest(self._sha256.hexdigest(), self._sha512.hexdigest(), self._size)


class HashingWriter:
    """Wrap a binary file opened for writing; hash every byte as it is written."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hasher = Hasher()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        written = self._raw.write(data)
        self._hasher.update(data)
        return written

    def flush(self) -> None:
        self._raw.flush()

    def tell(self) -> int:
        return self._hasher.size

    def digest(self) -> Digest:
        return self._hasher.digest()


def digest_stream(stream: BinaryIO, *, chunk_size: int = CHUNK_SIZE) -> Digest:
    """Hash a readable binary stream to its end, ``chunk_size`` bytes at a time."""
    hasher = Hasher()
    while chunk := stream.read(chunk_size):
        hasher.update(chunk)
    return hasher.digest()


def digest_bytes(data: bytes) -> Digest:
    hasher = Hasher()
    hasher.update(data)
    return hasher.digest()


def digest_chunks(chunks: Iterable[bytes]) -> Digest:
    hasher = Hasher()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.digest()
