"""A blob store in a local directory.

Layout: ``root/sha256/ab/cd/<64 hex>`` for the blob whose sha256 starts ``abcd``, and
``root/tmp/`` for blobs being written (on the same filesystem, so the final rename is
atomic). Directories are created on first use.

A put reads the data at most twice. A source file on another filesystem (or any stream)
is copied into ``tmp/`` while its SHA-256 (and SHA-512, when given) is computed, then the
copy is re-read once to verify it. A source file on the store's own filesystem is
hard-linked into ``tmp/`` instead and read once, to verify it; the stored blob is then
the caller's file itself (see :meth:`LocalBlobStore.put_file`).

Threat model and failure model:

* A crash or power cut mid-write must never leave a half-written blob under its address:
  bytes go to a uniquely named temporary file (or link), which is made read-only,
  fsynced and verified, and only then renamed into place; the directory is fsynced so
  the rename survives.
* A mismatch stores nothing: a source that is not the promised bytes leaves no blob and
  no temporary file, and a linked source is given back as it was (mode and times).
* A write path that corrupts bytes (bad RAM, a buggy filesystem or driver) is caught by
  verify-after-write: after the fsync the file's cached pages are dropped (best effort)
  and it is re-read and re-hashed before the rename, so what is checked is what the
  device returns.
* Stored blobs are 0o400 so a careless process or operator cannot edit them in place by
  accident. (This is no defence against a hostile root, nor against root at all: root
  ignores file modes. The custody ledger and fixity audits are the defence.)
* The store is private: its directories are created 0o700 and its blobs are readable by
  their owner only, whatever the process's umask (evidence may name witnesses).
* Two processes putting the same blob at once both succeed: their temporary names differ
  and each rename atomically installs identical, verified bytes.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from storage._streams import (
    Expected,
    Measured,
    copy_checked,
    hash_stream,
    open_source,
    refuse_held,
    refuse_source,
)
from storage.base import check_sha256
from storage.errors import BlobIntegrityError, BlobNotFound, StorageError, StoreUnavailable
from storage.files import fsync_dir

__all__ = ["LocalBlobStore"]

_log = logging.getLogger(__name__)

_HEX = frozenset("0123456789abcdef")

BLOB_MODE = 0o400  # a stored blob: read-only, readable by the store's owner only
DIR_MODE = 0o700  # every directory the store creates


class LocalBlobStore:
    """Content-addressed blobs in the directory ``root`` (see the module docstring).

    ``link_sources`` (default True) lets :meth:`put_file` hard-link a source file that is
    on the store's filesystem instead of copying it; with False every put copies.

    Subclassing hooks, for tests that must simulate faults without patching: the
    single place where bytes reach a temporary file is :meth:`_write_chunk` (override it
    to corrupt the write path and check that verify-after-write catches it), and the
    single place where a source is hard-linked is :meth:`_link` (override it to act as a
    filesystem without hard links).
    """

    def __init__(self, root: Path, *, link_sources: bool = True) -> None:
        self.root = Path(root).absolute()
        self.link_sources = link_sources
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

    def put_file(
        self, path: Path, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Store the file at ``path`` as blob ``sha256`` (see :class:`storage.BlobStore`),
        checking ``sha512`` too when it is given.

        When ``link_sources`` is on and ``path`` is a regular file on the store's
        filesystem, owned by this process's user and with no other name (one link), it is
        not copied: it is hard-linked into ``tmp/``, made read-only, fsynced, read once to
        verify it, and renamed into place. The file at ``path`` then *is* the stored
        blob: its mode becomes 0o400 and its mtime the time of the put, and the caller
        must never modify it in place again (unlinking or replacing ``path`` is fine).
        Mode 0o400 stops other users and careless programs, but not root. If the bytes
        do not match, or anything fails before the blob is installed, the link is removed
        and the file's mode and times are restored. When linking is impossible (another
        filesystem, no hard links, not permitted), the file is copied instead.

        Raises ValueError (malformed sha256, size or sha512), BlobIntegrityError (the file
        does not match, or the written copy failed verification, or the blob is held but
        does not hash to ``sha512``; nothing is stored), StoreUnavailable (the store
        cannot be written), StorageError (``path`` cannot be read).
        """
        expected = Expected.create(sha256=sha256, size=size, sha512=sha512)
        if self._holds_intact(expected):
            return
        with open_source(path, expected=expected, store=self.name) as source:
            if self.link_sources and self._put_by_link(path, source, expected):
                return
            self._put_by_copy(source, expected)

    def put_stream(
        self, stream: BinaryIO, *, sha256: str, size: int, sha512: str | None = None
    ) -> None:
        """Store what ``stream`` yields to its end as blob ``sha256`` (always a copy).

        Raises as :meth:`put_file` (StorageError when the stream cannot be read).
        """
        expected = Expected.create(sha256=sha256, size=size, sha512=sha512)
        if self._holds_intact(expected):
            return
        self._put_by_copy(stream, expected)

    def _write_chunk(self, out: BinaryIO, chunk: bytes) -> None:
        """Write one chunk of a blob to its temporary file (a hook for tests)."""
        out.write(chunk)

    def _link(self, source: Path, target: Path) -> None:
        """Hard-link ``source`` as ``target`` (a hook for tests). Raises OSError."""
        os.link(source, target)

    def _holds_intact(self, expected: Expected) -> bool:
        """Whether an intact copy is already held. A damaged copy counts as not held, so
        the caller's put replaces it with good bytes (a repair).

        Raises StoreUnavailable (the held copy cannot be read), BlobIntegrityError (it is
        intact but does not hash to the expected sha512)."""
        sha256 = expected.sha256
        path = self.path_for(sha256)
        try:
            with open(path, "rb") as existing:
                got = hash_stream(existing, sha512=expected.sha512 is not None)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StoreUnavailable(
                f"{self.name}: cannot re-read the existing copy of blob {sha256}: {exc}"
            ) from exc
        if got.sha256 != sha256:
            _log.warning(
                "%s: held copy of blob %s is damaged (%d bytes hashing to %s); "
                "replacing it with the bytes being put",
                self.name,
                sha256,
                got.size,
                got.sha256,
            )
            return False
        if got.size != expected.size:
            return False  # the caller's size is wrong; the write path will refuse it
        if got.sha512 is not None:
            refuse_held(expected, got.sha512, store=self.name)
        return True

    def _put_by_copy(self, source: BinaryIO, expected: Expected) -> None:
        """Copy ``source`` into ``tmp/`` while hashing it (the one read of the source),
        then verify the copy (the one re-read) and install it."""
        sha256 = expected.sha256
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
                        expected=expected,
                        store=self.name,
                    )
                    out.flush()
                    # Read-only before it is made durable, and so long before it becomes
                    # visible: there is never a moment when the blob sits under its
                    # address with write permission. (This descriptor may still write.)
                    os.fchmod(out.fileno(), BLOB_MODE)
                    os.fsync(out.fileno())
                    _drop_cache(out.fileno())
                # The source matched sha256 and sha512 as it was read; the copy matching
                # sha256 and size shows it holds those same bytes, so a second SHA-512
                # pass would add cost and no assurance.
                with open(tmp, "rb") as written:
                    self._check_written(hash_stream(written), expected)
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

    def _put_by_link(self, path: Path, source: BinaryIO, expected: Expected) -> bool:
        """Store ``source`` (opened from ``path``) by hard-linking it into ``tmp/``,
        verifying it with one read and installing it. Returns False, having changed
        nothing, when it cannot be linked; the caller then copies it.

        Raises BlobIntegrityError (nothing stored, the file given back as it was),
        StoreUnavailable, StorageError (the file cannot be read).
        """
        sha256 = expected.sha256
        fd = source.fileno()
        try:
            info = os.fstat(fd)
        except OSError as exc:
            raise StorageError(
                f"{self.name}: cannot read {path} to store blob {sha256}: {exc}"
            ) from exc
        # Only a private scratch file is taken over: a file with other names may be
        # written through them, and changing the mode of someone else's file is not ours
        # to do (nor possible, except for root).
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != os.geteuid():
            return False
        try:
            self._make_dirs(self._tmp)
            same_filesystem = os.stat(self._tmp).st_dev == info.st_dev
        except OSError as exc:
            raise StoreUnavailable(
                f"{self.name}: cannot use {self._tmp} for blob {sha256}: {exc}"
            ) from exc
        if not same_filesystem:
            return False
        tmp = self._tmp / f"{sha256[:16]}.{secrets.token_hex(8)}.link"
        try:
            self._link(path, tmp)
        except OSError as exc:
            # EXDEV (a bind mount), EPERM (protected hard links, a filesystem without
            # them), EMLINK...: a copy works wherever a link does not, and a fault that
            # would stop the copy too is reported by the copy, in its words.
            _log.debug("%s: cannot link %s (%s); copying it instead", self.name, path, exc)
            return False
        final = self.path_for(sha256)
        installed = False
        mode_changed = False
        try:
            try:
                linked = os.stat(tmp)
                same_file = (linked.st_dev, linked.st_ino) == (info.st_dev, info.st_ino)
                if not same_file or linked.st_nlink != 2:
                    # ``path`` was replaced after it was opened, or another process linked
                    # it meanwhile: copy from the file already open, which is the one meant.
                    return False
                # Read-only before it is verified: nobody (but root) can open it for
                # writing between the check and the rename.
                os.fchmod(fd, BLOB_MODE)
                mode_changed = True
                # The mtime of the put: the link then looks live to
                # remove_stale_temporaries, and a stored blob's mtime says when it was
                # stored, whichever way it got there.
                os.utime(fd)
                os.fsync(fd)
                _drop_cache(fd)
                source.seek(0)
            except OSError as exc:
                raise StoreUnavailable(f"{self.name}: cannot write blob {sha256}: {exc}") from exc
            try:
                got = hash_stream(source, sha512=expected.sha512 is not None)
            except OSError as exc:
                raise StorageError(
                    f"{self.name}: cannot read {path} to store blob {sha256}: {exc}"
                ) from exc
            refuse_source(expected, got, store=self.name)
            try:
                self._make_dirs(final.parent)
                # Atomic, as in _put_by_copy. Should ``final`` already be another name of
                # this very file, rename does nothing and leaves ``tmp`` (removed below).
                os.replace(tmp, final)
                installed = True
                fsync_dir(final.parent)
            except OSError as exc:
                raise StoreUnavailable(f"{self.name}: cannot write blob {sha256}: {exc}") from exc
            return True
        except BaseException as exc:
            if mode_changed and not installed:
                self._give_back(fd, info, exc)
            raise
        finally:
            tmp.unlink(missing_ok=True)

    def _give_back(self, fd: int, info: os.stat_result, failure: BaseException) -> None:
        """Restore the mode and times a linked source had, after a put that failed with
        ``failure``; if even that fails, say so on ``failure`` (which the caller sees)."""
        try:
            os.fchmod(fd, stat.S_IMODE(info.st_mode))
            os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
        except OSError as exc:
            failure.add_note(
                f"{self.name}: the source file was left read-only: restoring its mode "
                f"failed: {exc}"
            )

    def _check_written(self, got: Measured, expected: Expected) -> None:
        """Raise BlobIntegrityError if what was re-read from a temporary file is not
        what the source promised."""
        if (got.sha256, got.size) != (expected.sha256, expected.size):
            raise BlobIntegrityError(
                f"{self.name}: verify after write failed for blob {expected.sha256}: the "
                f"written copy has {got.size} bytes hashing to {got.sha256}; nothing was "
                "stored, check the disk and retry"
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
                new.mkdir(mode=DIR_MODE)
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
        killed mid-blob left behind, partial copies and links to sources (a live writer
        keeps its file's mtime fresh, and a put by link sets the mtime when it links;
        nothing under ``tmp/`` is ever a stored blob, and removing a link only removes a
        name). Returns how many were deleted. Raises StoreUnavailable."""
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
