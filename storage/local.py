"""A blob store in a local directory.

Layout: ``root/sha256/ab/cd/<64 hex>`` for the blob whose sha256 starts ``abcd``, and
``root/tmp/`` for blobs being written (on the same filesystem, so the final rename is
atomic). Directories are created on first use.

Threat model and failure model:

* A crash or power cut mid-write must never leave a half-written blob under its address:
  bytes go to a uniquely named temporary file, which is fsynced, verified, made read-only
  and only then renamed into place; the directory is fsynced so the rename survives.
* A write path that corrupts bytes (bad RAM, a buggy filesystem or driver) is caught by
  verify-after-write: the temporary file is re-read and re-hashed before the rename.
* Stored blobs are 0o444 so a careless process or operator cannot edit them in place by
  accident. (This is no defence against a hostile root: the custody ledger and fixity
  audits are.)
* Two processes putting the same blob at once both succeed: their temporary names differ
  and each rename atomically installs identical, verified bytes.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage._streams import copy_checked, hash_stream, open_source
from storage.base import check_sha256, check_size
from storage.errors import BlobIntegrityError, BlobNotFound, StoreUnavailable
from storage.files import fsync_dir

__all__ = ["LocalBlobStore"]

_log = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdef")


class LocalBlobStore:
    """Content-addressed blobs in the directory ``root`` (see the module docstring).

    Subclassing hook: :meth:`_write_chunk` is the single place where bytes reach the
    temporary file. Tests override it to simulate a write path that corrupts data and
    check that verify-after-write catches it.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._blobs = self.root / "sha256"
        self._tmp = self.root / "tmp"

    @property
    def name(self) -> str:
        """``local:<absolute root>``."""
        return f"local:{self.root}"

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def path_for(self, sha256: str) -> Path:
        """Where blob ``sha256`` lives (whether or not it is held). Raises ValueError."""
        check_sha256(sha256)
        return self._blobs / sha256[:2] / sha256[2:4] / sha256

    # -- writing ------------------------------------------------------------------------

    def put_file(self, path: Path, *, sha256: str, size: int) -> None:
        """Store the file at ``path`` as blob ``sha256`` (see :class:`storage.BlobStore`).

        Raises ValueError (malformed sha256 or size), BlobIntegrityError (the file does
        not match, or the written copy failed verification; nothing is stored),
        StoreUnavailable (the store cannot be written), StorageError (``path`` cannot be
        read).
        """
        check_sha256(sha256)
        check_size(size)
        if self._holds_intact(sha256, size):
            return
        with open_source(path, sha256=sha256, size=size, store=self.name) as source:
            self._write(source, sha256, size)

    def put_stream(self, stream: BinaryIO, *, sha256: str, size: int) -> None:
        """Store what ``stream`` yields to its end as blob ``sha256``.

        Raises as :meth:`put_file` (StorageError when the stream cannot be read).
        """
        check_sha256(sha256)
        check_size(size)
        if self._holds_intact(sha256, size):
            return
        self._write(stream, sha256, size)

    def _write_chunk(self, out: BinaryIO, chunk: bytes) -> None:
        """Write one chunk of a blob to its temporary file (a hook for tests)."""
        out.write(chunk)

    def _holds_intact(self, sha256: str, size: int) -> bool:
        """Whether an intact copy is already held. A damaged copy counts as not held, so
        the caller's put replaces it with good bytes (a repair)."""
        path = self.path_for(sha256)
        try:
            with open(path, "rb") as existing:
                got = hash_stream(existing)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreUnavailable(
                f"{self.name}: cannot re-read the existing copy of blob {sha256}: {exc}"
            ) from exc
        if got[0] != sha256:
            _log.warning(
                "%s: held copy of blob %s is damaged (%d bytes hashing to %s); "
                "replacing it with the bytes being put",
                self.name,
                sha256,
                got[1],
                got[0],
            )
        return got == (sha256, size)

    def _write(self, source: BinaryIO, sha256: str, size: int) -> None:
        final = self.path_for(sha256)
        try:
            self._make_dirs(self._tmp)
            fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix=f"{sha256[:16]}.", suffix=".part")
        except OSError as exc:
            raise StoreUnavailable(
                f"{self.name}: cannot create a temporary file for blob {sha256}: {exc}"
            ) from exc
        tmp = Path(tmp_name)
        installed = False
        try:
            try:
                with os.fdopen(fd, "wb") as out:
                    copy_checked(
                        source,
                        lambda chunk: self._write_chunk(out, chunk),
                        sha256=sha256,
                        size=size,
                        store=self.name,
                    )
                    out.flush()
                    os.fsync(out.fileno())
                    _drop_cache(out.fileno())
                self._verify(tmp, sha256, size)
                # Read-only before it becomes visible: there is never a moment when the
                # blob sits under its address with write permission.
                os.chmod(tmp, 0o444)
                self._make_dirs(final.parent)
                # Atomic: readers see the old state or the whole verified blob. If another
                # process installed the same blob meanwhile, this replaces it with
                # identical verified bytes; if a damaged copy was there, this repairs it.
                os.replace(tmp, final)
                installed = True
                fsync_dir(final.parent)
            except OSError as exc:
                raise StoreUnavailable(f"{self.name}: cannot write blob {sha256}: {exc}") from exc
        finally:
            if not installed:
                tmp.unlink(missing_ok=True)

    def _verify(self, tmp: Path, sha256: str, size: int) -> None:
        """Re-read the temporary file and compare it with what the source promised."""
        with open(tmp, "rb") as written:
            got_sha256, got_size = hash_stream(written)
        if (got_sha256, got_size) != (sha256, size):
            raise BlobIntegrityError(
                f"{self.name}: verify after write failed for blob {sha256}: the written "
                f"copy has {got_size} bytes hashing to {got_sha256}; nothing was stored, "
                "check the disk and retry"
            )

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents, fsyncing each new entry's parent so
        a crash cannot forget a directory that a renamed blob already lives in."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            current = current.parent
        for new in reversed(missing):
            try:
                new.mkdir()
            except FileExistsError:
                continue  # another process made it first
            fsync_dir(new.parent)

    # -- reading ------------------------------------------------------------------------

    def open(self, sha256: str) -> BinaryIO:
        """Open blob ``sha256`` read-only; the file object is its own context manager.

        Raises ValueError (malformed sha256), BlobNotFound, StoreUnavailable.
        """
        path = self.path_for(sha256)
        try:
            return open(path, "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(f"{self.name}: blob {sha256} is missing") from exc
        except OSError as exc:
            raise StoreUnavailable(f"{self.name}: cannot open blob {sha256}: {exc}") from exc

    def remove_stale_temporaries(self, *, older_than_seconds: float) -> int:
        """Delete files in ``tmp/`` untouched for ``older_than_seconds``: what a writer
        killed mid-blob left behind (a live writer keeps its file's mtime fresh; nothing
        under ``tmp/`` is ever a stored blob). Returns how many were deleted."""
        deleted = 0
        cutoff = time.time() - older_than_seconds
        try:
            entries = list(os.scandir(self._tmp))
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StoreUnavailable(f"{self.name}: cannot list {self._tmp}: {exc}") from exc
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    deleted += 1
            except FileNotFoundError:
                continue  # its writer finished or cleaned up meanwhile
            except OSError as exc:
                raise StoreUnavailable(f"{self.name}: cannot delete {entry.path}: {exc}") from exc
        return deleted

    def exists(self, sha256: str) -> bool:
        """Whether blob ``sha256`` is held (not re-hashed). Raises ValueError."""
        return self.path_for(sha256).is_file()

    def iter_blobs(self) -> Iterator[str]:
        """Yield the sha256 of every blob held, in ascending order.

        Entries that do not fit the layout (stray names, a blob in the wrong directory)
        are skipped: they are not addressable blobs. Raises StoreUnavailable.
        """
        try:
            for first in _names(self._blobs, directories=True):
                if not _is_hex(first, 2):
                    continue
                for second in _names(self._blobs / first, directories=True):
                    if not _is_hex(second, 2):
                        continue
                    for name in _names(self._blobs / first / second, directories=False):
                        if _is_hex(name, 64) and name[:4] == first + second:
                            yield name
        except OSError as exc:
            raise StoreUnavailable(f"{self.name}: cannot list blobs: {exc}") from exc


def _is_hex(name: str, length: int) -> bool:
    return len(name) == length and set(name) <= _HEX


def _names(directory: Path, *, directories: bool) -> list[str]:
    """Sorted names of the sub-directories (or the regular files) of ``directory``."""
    try:
        with os.scandir(directory) as entries:
            return sorted(
                entry.name
                for entry in entries
                if (
                    entry.is_dir(follow_symlinks=False)
                    if directories
                    else entry.is_file(follow_symlinks=False)
                )
            )
    except FileNotFoundError:
        return []


def _drop_cache(fd: int) -> None:
    # Best effort: ask the kernel to drop the (now clean, fsynced) cached pages so that the
    # verification re-read comes from the device rather than from memory. The kernel may
    # ignore it; verification then still catches corruption on the write path in software.
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
