"""Stream helpers shared by the stores: copy while hashing, hash a stream.

Everything moves in :data:`CHUNK_SIZE` pieces so a 2 GiB video is never held in memory.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from storage.errors import BlobIntegrityError, StorageError

CHUNK_SIZE = 1024 * 1024


def copy_checked(
    source: BinaryIO,
    sink: Callable[[bytes], None],
    *,
    sha256: str,
    size: int,
    store: str,
) -> None:
    """Read ``source`` to its end, passing every chunk to ``sink``, and check that the
    bytes read hash to ``sha256`` and number exactly ``size``.

    The digest and the length are checked together: a digest alone invites truncation
    tricks, a length alone catches nothing. A source longer than ``size`` is refused as
    soon as it overflows, so a runaway stream cannot fill memory or disk.

    Raises BlobIntegrityError on a mismatch (the sink has then seen bytes that must be
    discarded), StorageError when the source cannot be read. Exceptions raised by
    ``sink`` propagate unchanged.
    """
    hasher = hashlib.sha256()
    total = 0
    while True:
        try:
            chunk = source.read(CHUNK_SIZE)
        except OSError as exc:
            raise StorageError(f"{store}: cannot read the source of blob {sha256}: {exc}") from exc
        if not chunk:
            break
        total += len(chunk)
        if total > size:
            raise BlobIntegrityError(
                f"{store}: refused blob {sha256}: the source is longer than the "
                f"expected {size} bytes"
            )
        hasher.update(chunk)
        sink(chunk)
    if total != size:
        raise BlobIntegrityError(
            f"{store}: refused blob {sha256}: the source has {total} bytes, expected {size}"
        )
    got = hasher.hexdigest()
    if got != sha256:
        raise BlobIntegrityError(
            f"{store}: refused blob {sha256}: the source hashes to sha256 {got}"
        )


def hash_stream(stream: BinaryIO) -> tuple[str, int]:
    """Return ``(sha256 hex, size)`` of what ``stream`` yields up to its end.

    Exceptions raised by ``stream.read`` propagate unchanged.
    """
    hasher = hashlib.sha256()
    total = 0
    while chunk := stream.read(CHUNK_SIZE):
        hasher.update(chunk)
        total += len(chunk)
    return hasher.hexdigest(), total


def open_source(path: Path, *, sha256: str, size: int, store: str) -> BinaryIO:
    """Open the file to be stored as blob ``sha256``, refusing at once a regular file of
    the wrong length (before a 2 GiB upload is wasted on it).

    The caller closes the returned file. Raises StorageError (``path`` cannot be read),
    BlobIntegrityError (wrong length).
    """
    try:
        source = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
        info = os.fstat(source.fileno())
    except OSError as exc:
        raise StorageError(f"{store}: cannot read {path} to store blob {sha256}: {exc}") from exc
    if stat.S_ISREG(info.st_mode) and info.st_size != size:
        source.close()
        raise BlobIntegrityError(
            f"{store}: refused blob {sha256}: {path} has {info.st_size} bytes, expected {size}"
        )
    return source
